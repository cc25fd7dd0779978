"""Seeded synthetic Hubble-like mosaics for tests, the grid self-test and benchmarks.

Drizzled-like FITS files (an empty primary HDU, then SCI and WHT image extensions with a north-up
TAN WCS) holding Gaussian sources on noise. :func:`write_synthetic_mosaic` builds the image in
memory; :func:`write_streaming_mosaic` writes band by band, so a mosaic larger than memory can be
made. The same seed gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["tan_header", "write_streaming_mosaic", "write_synthetic_mosaic"]


def tan_header(
    shape: tuple[int, int],
    *,
    pixel_scale_arcsec: float = 0.05,
    crval: tuple[float, float] = (150.1, 2.2),
    radesys: str | None = "ICRS",
):
    """A north-up TAN WCS header centred on the image, with ``BUNIT = ELECTRONS/S``.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the image.
    pixel_scale_arcsec : float
        Pixel scale (arcsec).
    crval : tuple of float
        ``(ra, dec)`` of the image centre (deg).
    radesys : str or None
        The ``RADESYS`` to write (None: leave it to astropy's default).

    Returns
    -------
    astropy.io.fits.Header
    """
    from astropy.wcs import WCS

    ny, nx = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [nx / 2 + 0.5, ny / 2 + 0.5]
    wcs.wcs.crval = list(crval)
    wcs.wcs.cdelt = [-pixel_scale_arcsec / 3600.0, pixel_scale_arcsec / 3600.0]
    if radesys is not None:
        wcs.wcs.radesys = radesys
    header = wcs.to_header()
    header["BUNIT"] = "ELECTRONS/S"
    return header


def write_synthetic_mosaic(
    path: Path,
    shape: tuple[int, int] = (600, 500),
    *,
    seed: int = 0,
    n_sources: int = 40,
    pixel_scale_arcsec: float = 0.05,
    crval: tuple[float, float] = (150.1, 2.2),
    footprint_margin: int = 0,
    dtype: str = "float32",
) -> Path:
    """Write a drizzled-like FITS (empty primary, SCI + WHT) with Gaussian sources on noise.

    The SCI extension has a north-up TAN WCS; WHT is zero in a border of ``footprint_margin``
    pixels (outside the footprint) and one elsewhere, where SCI is also zero outside.

    Parameters
    ----------
    path : Path
        FITS file to write (overwritten if present).
    shape : tuple of int
        ``(ny, nx)`` of the image, pixels.
    seed : int
        Seed of the noise and of the sources' positions, fluxes and widths.
    n_sources : int
        Number of circular Gaussian sources (sigma 1-6 pixels, total flux 0.5-20).
    pixel_scale_arcsec : float
        Pixel scale (arcsec per pixel).
    crval : tuple of float
        ``(ra, dec)`` of the image centre (deg).
    footprint_margin : int
        Width (pixels) of the border outside the footprint (WHT = 0, SCI = 0); 0 for none.
    dtype : str
        NumPy dtype of the SCI data (WHT is always float32).

    Returns
    -------
    Path
        ``path``. The primary header carries ACS/WFC F814W keywords (instrument, filters,
        date, exposure, proposal).
    """
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    ny, nx = shape
    data = rng.normal(0.0, 0.01, size=shape)
    yy, xx = np.mgrid[0:ny, 0:nx]
    for _ in range(n_sources):
        x, y = rng.uniform(0, nx), rng.uniform(0, ny)
        flux, sigma = rng.uniform(0.5, 20.0), rng.uniform(1.0, 6.0)
        data += (
            flux
            * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
            / (2 * np.pi * sigma**2)
        )
    wht = np.ones(shape, dtype="float32")
    if footprint_margin:
        m = footprint_margin
        wht[:m, :] = wht[-m:, :] = 0
        wht[:, :m] = wht[:, -m:] = 0
        data[wht == 0] = 0.0

    header = tan_header(shape, pixel_scale_arcsec=pixel_scale_arcsec, crval=crval)

    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "HST"
    primary.header["INSTRUME"] = "ACS"
    primary.header["DETECTOR"] = "WFC"
    primary.header["FILTER1"] = "F814W"
    primary.header["FILTER2"] = "CLEAR2L"
    primary.header["DATE-OBS"] = "2004-03-01"
    primary.header["EXPTIME"] = 2028.0
    primary.header["PROPOSID"] = 9822
    primary.header["TARGNAME"] = "SYNTHETIC"
    sci = fits.ImageHDU(data.astype(dtype), header=header, name="SCI")
    whthdu = fits.ImageHDU(wht, header=header, name="WHT")
    fits.HDUList([primary, sci, whthdu]).writeto(path, overwrite=True)
    return path


def write_streaming_mosaic(path: Path, side: int, *, seed: int = 0, band: int = 512) -> Path:
    """Write a ``side`` x ``side`` drizzled-like FITS (SCI + WHT) band by band (flat memory).

    Parameters
    ----------
    path : Path
        FITS file to write (overwritten if present).
    side : int
        Width and height of the image, pixels.
    seed : int
        Seed of the noise and the sources.
    band : int
        Rows generated and written at a time; memory grows with ``band * side``, not ``side**2``.

    Returns
    -------
    Path
        ``path``: big-endian float32 SCI (noise plus ``side // 64`` Gaussian sources per band)
        and WHT (all one), both with a north-up TAN WCS.
    """
    from astropy.io import fits

    header = tan_header((side, side), radesys=None)
    rng = np.random.default_rng(seed)
    fits.PrimaryHDU().writeto(path, overwrite=True)
    for name in ("SCI", "WHT"):
        h = fits.Header()
        h["XTENSION"] = "IMAGE"
        h["BITPIX"] = -32
        h["NAXIS"] = 2
        h["NAXIS1"] = side
        h["NAXIS2"] = side
        h["PCOUNT"] = 0
        h["GCOUNT"] = 1
        h["EXTNAME"] = name
        h.update(header)
        with fits.StreamingHDU(str(path), h) as out:
            yy, xx = np.mgrid[0:band, 0:side]
            for y in range(0, side, band):
                rows = min(band, side - y)
                if name == "WHT":
                    out.write(np.ones((rows, side), ">f4"))
                    continue
                data = rng.normal(0.0, 0.01, size=(rows, side))
                for _ in range(max(1, side // 64)):
                    x0, y0 = rng.uniform(0, side), rng.uniform(0, rows)
                    s = rng.uniform(1.0, 5.0)
                    lo, hi = int(max(0, x0 - 4 * s)), int(min(side, x0 + 4 * s + 1))
                    sub = np.s_[:rows, lo:hi]
                    data[sub] += rng.uniform(0.5, 20) * np.exp(
                        -((xx[sub] - x0) ** 2 + (yy[sub] - y0) ** 2) / (2 * s * s)
                    )
                out.write(data.astype(">f4"))
    return path
