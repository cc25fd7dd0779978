"""Synthetic crowded star fields, for tuning on sky like a globular cluster core.

The training mosaics of :mod:`benchmarks.quality` are extragalactic fields; its largest scoring
mosaic is the crowded 47 Tuc core. These fields give the tune crowded stellar sky without any
cut of the scoring sky: stars at random sub-pixel places, fluxes from a power law over four
decades up to saturation, a Moffat core plus a broad halo as the PSF (width drawn per field),
a sky level with Gaussian noise, and a flat saturation ceiling.
"""

from __future__ import annotations

import numpy as np

__all__ = ["star_field", "write_star_field"]


def _psf(fwhm: float, beta: float, halo: float, radius: int = 24) -> np.ndarray:
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float64)
    r2 = x * x + y * y
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    core = (1.0 + r2 / alpha**2) ** (-beta)
    wide = np.exp(-0.5 * r2 / (4.0 * fwhm) ** 2)
    psf = core / core.sum() + halo * wide / wide.sum()
    return psf / psf.sum()


def star_field(seed: int, size: int = 1024, density: float = 0.03, fwhm: float = 2.5) -> np.ndarray:
    """One synthetic crowded star field in counts (float32, ``size`` x ``size``).

    Parameters
    ----------
    seed : int
        Seed of every draw.
    size : int
        Side in pixels.
    density : float
        Stars per pixel (the 47 Tuc core has ~0.01 peaks per pixel above its sky).
    fwhm : float
        PSF core full width at half maximum in pixels.

    Returns
    -------
    numpy.ndarray, float32, shape (size, size)
    """
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(seed)
    n = int(density * size * size)
    pos = rng.uniform(0, size - 1, size=(n, 2))
    # power-law fluxes over four decades: many faint stars, few bright ones
    slope = rng.uniform(0.5, 0.8)
    u = rng.uniform(size=n)
    lo, hi = 1e3, 2e7
    flux = (lo**-slope - u * (lo**-slope - hi**-slope)) ** (-1.0 / slope)
    img = np.zeros((size, size), dtype=np.float64)
    iy, ix = np.floor(pos[:, 0]).astype(int), np.floor(pos[:, 1]).astype(int)
    fy, fx = pos[:, 0] - iy, pos[:, 1] - ix
    for dy, dx, w in (
        (0, 0, (1 - fy) * (1 - fx)),
        (1, 0, fy * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 1, fy * fx),
    ):
        np.add.at(img, (np.minimum(iy + dy, size - 1), np.minimum(ix + dx, size - 1)), flux * w)
    psf = _psf(fwhm, rng.uniform(2.0, 3.5), rng.uniform(0.05, 0.3))
    img = fftconvolve(img, psf, mode="same")
    sky = rng.uniform(30.0, 80.0)
    img = img + sky + rng.normal(0.0, rng.uniform(3.0, 8.0), size=img.shape)
    img = np.minimum(img, rng.uniform(8e4, 1.3e5))
    return img.astype(np.float32)


def write_star_field(path, seed: int, size: int = 1024) -> None:
    """Write :func:`star_field` (density and PSF width drawn from ``seed``) as a FITS mosaic.

    The image gets a TAN WCS at 0.025"/px (the ACS/HRC drizzled scale) centred on a made-up
    position away from any scoring field, so the project's tiling takes it like a real mosaic.

    Parameters
    ----------
    path : path-like
        Output FITS file (overwritten).
    seed : int
        Seed of the field (also draws its density in [0.01, 0.04] and FWHM in [1.8, 3.5] px).
    size : int
        Side in pixels.
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    rng = np.random.default_rng([seed, 7])
    density, fwhm = float(rng.uniform(0.01, 0.04)), float(rng.uniform(1.8, 3.5))
    data = star_field(seed, size=size, density=density, fwhm=fwhm)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [size / 2 + 0.5, size / 2 + 0.5]
    wcs.wcs.crval = [180.0 + 0.5 * seed, 30.0]
    wcs.wcs.cdelt = [-0.025 / 3600, 0.025 / 3600]
    header = wcs.to_header()
    header["BUNIT"] = "ELECTRONS"
    header["COMMENT"] = "synthetic crowded star field (hubcat benchmarks._starfields)"
    fits.PrimaryHDU(data, header=header).writeto(path, overwrite=True)
