"""Random views of tiles for self-supervised tuning: what a tile's vector must not depend on.

A view of a tile is a square crop at a random place (a sub-tile shift, and a small zoom when the
crop is resized back to the tile size), one of the 8 flips/rotations, a Gaussian blur of random
width (the PSF), a random power-law change of the stretch, and Gaussian noise. Two views of one
tile show the same sky; views of other tiles show other sky. Everything is drawn from a
``torch.Generator``, so the same seed gives the same views.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["ViewParams", "make_views"]


@dataclass(frozen=True)
class ViewParams:
    """Ranges of the random view transforms.

    Attributes
    ----------
    crop_min, crop_max : float
        Side of the crop as a fraction of the tile side (the crop is resized back to the tile
        size: a zoom of ``1 / fraction``; its place is uniform inside the tile: a shift).
    blur_max : float
        Largest Gaussian blur sigma, in tile pixels (a broader PSF); drawn uniformly from 0.
    gamma_max : float
        The stretch changes as ``x ** g`` with ``log g`` uniform in ``[-log gamma_max,
        log gamma_max]``.
    noise_max : float
        Largest standard deviation of added Gaussian noise, in stretched units.
    """

    crop_min: float = 0.70
    crop_max: float = 0.95
    blur_max: float = 1.2
    gamma_max: float = 1.25
    noise_max: float = 0.02

    def to_dict(self) -> dict[str, float]:
        return {
            "crop_min": self.crop_min,
            "crop_max": self.crop_max,
            "blur_max": self.blur_max,
            "gamma_max": self.gamma_max,
            "noise_max": self.noise_max,
        }


def _blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(1, 1, H, W)`` with reflected borders."""
    if sigma < 0.05:
        return img
    radius = max(1, int(3 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    img = F.pad(img, (radius, radius, radius, radius), mode="reflect")
    img = F.conv2d(img, k.view(1, 1, 1, -1))
    return F.conv2d(img, k.view(1, 1, -1, 1))


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=gen))


def make_views(
    tiles: torch.Tensor, n_views: int, params: ViewParams, gen: torch.Generator
) -> torch.Tensor:
    """``n_views`` random views of every tile.

    Parameters
    ----------
    tiles : torch.Tensor, shape (N, S, S), float32, values in [0, 1]
    n_views : int
    params : ViewParams
    gen : torch.Generator
        Source of every random draw (seeded by the caller).

    Returns
    -------
    torch.Tensor, shape (N, n_views, S, S), float32, values in [0, 1]
    """
    n, size = tiles.shape[0], tiles.shape[-1]
    out = torch.empty((n, n_views, size, size), dtype=torch.float32)
    for i in range(n):
        for v in range(n_views):
            side = round(size * _uniform(gen, params.crop_min, params.crop_max))
            side = min(size, max(8, side))
            y0 = int(torch.randint(0, size - side + 1, (), generator=gen))
            x0 = int(torch.randint(0, size - side + 1, (), generator=gen))
            img = tiles[i, y0 : y0 + side, x0 : x0 + side][None, None]
            if side != size:
                img = F.interpolate(
                    img, size=(size, size), mode="bilinear", antialias=True, align_corners=False
                )
            k = int(torch.randint(0, 8, (), generator=gen))
            if k >= 4:
                img = img.flip(-1)
            img = torch.rot90(img, k % 4, dims=(-2, -1))
            img = _blur(img, _uniform(gen, 0.0, params.blur_max))
            log_g = _uniform(gen, -1.0, 1.0) * float(torch.log(torch.tensor(params.gamma_max)))
            img = img.clamp(0.0, 1.0) ** float(torch.exp(torch.tensor(log_g)))
            sigma = _uniform(gen, 0.0, params.noise_max)
            if sigma > 0:
                img = img + sigma * torch.randn(img.shape, generator=gen)
            out[i, v] = img[0, 0].clamp(0.0, 1.0)
    return out
