"""Random views of tiles for self-supervised tuning: what a tile's vector must not depend on.

A view of a tile is a square crop at a random place (a sub-tile shift, and a small zoom when the
crop is resized back to the tile size), optionally translated further (the border filled by
reflection: a shift at the tile's own scale), one of the 8 flips/rotations (or none), a Gaussian
blur of random width (the PSF), a random power-law change of the stretch, and Gaussian noise. Two views of one
tile show the same sky; views of other tiles show other sky. Everything is drawn from a
``torch.Generator``, so the same seed gives the same views.
"""

from __future__ import annotations

import math
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
    shift_max : float
        Largest translation of the view in x and in y, as a fraction of the tile side, drawn
        uniformly in ``[-shift_max, shift_max]``; what comes in at the border is the tile
        reflected. With ``crop_min = crop_max = 1`` the two views of a pair show the same sky at
        the same scale, shifted against each other, as two cuts of a mosaic do.
    rotate : bool
        Apply a random one of the 8 flips/rotations to each view (False: none; the embedding
        pools the 8 anyway).
    """

    crop_min: float = 0.70
    crop_max: float = 0.95
    blur_max: float = 1.2
    gamma_max: float = 1.25
    noise_max: float = 0.02
    shift_max: float = 0.0
    rotate: bool = True

    def to_dict(self) -> dict[str, float | bool]:
        """The view parameters as a JSON-compatible dict.

        Returns
        -------
        dict of str to float or bool
        """
        return {
            "crop_min": self.crop_min,
            "crop_max": self.crop_max,
            "blur_max": self.blur_max,
            "gamma_max": self.gamma_max,
            "noise_max": self.noise_max,
            "shift_max": self.shift_max,
            "rotate": self.rotate,
        }


#: The 8 flips/rotations as 2x2 matrices acting on output coordinates (x, y).
_D4 = (
    ((1, 0), (0, 1)),
    ((0, -1), (1, 0)),
    ((-1, 0), (0, -1)),
    ((0, 1), (-1, 0)),
    ((-1, 0), (0, 1)),
    ((0, 1), (1, 0)),
    ((1, 0), (0, -1)),
    ((0, -1), (-1, 0)),
)
#: Views made per batched call (bounds memory).
_CHUNK = 64


def _blur(images: torch.Tensor, sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur of ``(M, S, S)`` with one sigma per image, reflected borders."""
    m = images.shape[0]
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    s = sigmas.clamp(min=1e-3).view(m, 1)
    k = torch.exp(-0.5 * (x.view(1, -1) / s) ** 2)
    k = k / k.sum(dim=1, keepdim=True)
    img = F.pad(images[None], (radius, radius, radius, radius), mode="reflect")
    img = F.conv2d(img, k.view(m, 1, 1, -1), groups=m)
    img = F.conv2d(img, k.view(m, 1, -1, 1), groups=m)
    return img[0]


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
    m = n * n_views
    # every draw is made up front, in one order, so the views depend only on the seed
    frac = params.crop_min + (params.crop_max - params.crop_min) * torch.rand(m, generator=gen)
    frac = frac.clamp(max=1.0)
    place = torch.rand(m, 2, generator=gen) * (1.0 - frac).view(m, 1)
    d4 = torch.randint(0, 8, (m,), generator=gen)
    sigma = params.blur_max * torch.rand(m, generator=gen)
    log_gamma = (2 * torch.rand(m, generator=gen) - 1) * math.log(params.gamma_max)
    noise = params.noise_max * torch.rand(m, generator=gen)
    eps = torch.randn((m, size, size), generator=gen)
    if not params.rotate:
        d4 = torch.zeros_like(d4)
    rot = torch.tensor(_D4, dtype=torch.float32)[d4]  # (m, 2, 2)
    theta = torch.empty((m, 2, 3), dtype=torch.float32)
    theta[:, :, :2] = rot * frac.view(m, 1, 1)
    theta[:, :, 2] = (place + 0.5 * frac.view(m, 1)) * 2.0 - 1.0
    padding = "border"
    if params.shift_max > 0:
        # drawn after the others, so views without a shift are the ones earlier versions made
        theta[:, :, 2] += (2 * torch.rand(m, 2, generator=gen) - 1) * 2.0 * params.shift_max
        padding = "reflection"
    radius = max(1, math.ceil(3 * params.blur_max))
    source = tiles.repeat_interleave(n_views, dim=0)
    out = torch.empty((m, size, size), dtype=torch.float32)
    for a in range(0, m, _CHUNK):
        b = min(m, a + _CHUNK)
        grid = F.affine_grid(theta[a:b], [b - a, 1, size, size], align_corners=False)
        img = F.grid_sample(
            source[a:b, None], grid, mode="bilinear", padding_mode=padding, align_corners=False
        )[:, 0]
        if params.blur_max > 0:
            img = _blur(img, sigma[a:b], radius)
        img = img.clamp(0.0, 1.0) ** torch.exp(log_gamma[a:b]).view(-1, 1, 1)
        img = img + noise[a:b].view(-1, 1, 1) * eps[a:b]
        out[a:b] = img.clamp(0.0, 1.0)
    return out.view(n, n_views, size, size)
