"""World coordinates of tiles: the WCS of a binned box, centres in ICRS, pixel scales."""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["box_wcs", "centres_icrs", "pixel_scale_arcsec", "wcs_from_header_text"]


def box_wcs(wcs, x0: int, y0: int, zoom: int, size: int):
    """WCS of the tile cut from box ``data[y0:y0+size*zoom, x0:x0+size*zoom]`` binned by ``zoom``.

    Tile pixel ``i`` (0-based) is the mean of source pixels ``x0 + i*zoom .. x0 + i*zoom +
    zoom - 1``, whose centre is ``x0 + i*zoom + (zoom - 1) / 2``; the reference pixel moves
    accordingly and the linear transformation scales by ``zoom``. (``WCS.slice`` with a step
    mishandles CD matrices, so the box WCS is built here.)

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        Celestial, distortion-free WCS of the source image.
    x0, y0 : int
        First column and row of the box (0-based source pixels).
    zoom : int
        Binning factor.
    size : int
        Tile side in binned pixels.

    Returns
    -------
    astropy.wcs.WCS
        A copy of ``wcs`` for the ``size`` x ``size`` tile (``pixel_shape`` set).
    """
    out = wcs.deepcopy()
    crpix = np.asarray(wcs.wcs.crpix, dtype=np.float64)
    origin = np.array([x0, y0], dtype=np.float64)
    out.wcs.crpix = (crpix - 1.0 - origin - (zoom - 1) / 2.0) / zoom + 1.0
    if wcs.wcs.has_cd():
        out.wcs.cd = np.asarray(wcs.wcs.cd) * zoom
    else:
        out.wcs.cdelt = np.asarray(wcs.wcs.cdelt) * zoom
    out.pixel_shape = (size, size)
    out.wcs.set()
    return out


def centres_icrs(wcs, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ICRS RA/Dec (deg) of 0-based source pixel positions ``(x, y)``."""
    coords = wcs.pixel_to_world(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    icrs = coords.icrs
    return np.atleast_1d(icrs.ra.deg), np.atleast_1d(icrs.dec.deg)


def pixel_scale_arcsec(wcs) -> float:
    """Mean pixel scale of a celestial WCS in arcsec per pixel."""
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0)


def wcs_from_header_text(text: str):
    """Rebuild a WCS from the header text :meth:`WCS.to_header_string` wrote."""
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(fits.Header.fromstring(text))
