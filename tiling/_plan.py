"""Which HDUs of a FITS source can be tiled, and how: an :class:`ImagePlan` per image HDU (WCS, footprint, rectification checks)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tiling.errors import SourceError

#: Extensions that are never the science image of a product.
_AUXILIARY = {"WHT", "CTX", "ERR", "DQ", "CON", "EXP", "HDRTAB", "WCSCORR", "ASN", "SAMP", "TIME"}
#: File-name suffixes of HST products that are not drizzled (distorted, non-square pixels).
_UNDRIZZLED = ("_flt", "_flc", "_raw", "_crj", "_crc", "_c0m", "_c1m", "_ima", "_cal", "_sfl")
#: Relative tolerance on pixel squareness and axis orthogonality of a rectified mosaic.
_SQUARE_TOL = 2e-3

if TYPE_CHECKING:
    from tiling._source import Source

__all__ = ["ImagePlan", "check_rectified", "plan_images"]


@dataclass
class ImagePlan:
    """One image HDU of a product that can be tiled as a mosaic (one band)."""

    hdu: int
    extname: str
    header: object  # astropy.io.fits.Header of the image
    primary: object  # primary header
    offset: int
    footprint_hdu: int | None
    footprint_kind: str  # "WHT", "CTX" or "finite-nonzero"
    footprint_header: object | None
    footprint_offset: int | None
    wcs: object  # astropy.wcs.WCS, celestial


def _data_offset(hdu) -> int:
    return int(hdu.fileinfo()["datLoc"])


def _image_shape(header) -> tuple[int, ...]:
    naxis = int(header.get("NAXIS", 0))
    return tuple(int(header.get(f"NAXIS{i}", 0)) for i in range(naxis, 0, -1))


def _check_complete(src: Source, header, offset: int, what: str) -> None:
    shape = _image_shape(header)
    nbytes = math.prod(shape) * abs(int(header["BITPIX"])) // 8
    total = src.local_path.stat().st_size if src.local_path is not None else src.size
    if offset + nbytes > total:
        msg = (
            f"is truncated: {what} needs bytes {offset}..{offset + nbytes} but the file has "
            f"{total} bytes; re-download it"
        )
        raise SourceError(src.uri, msg)


def _celestial_wcs(src: Source, header, hdu_index: int):
    from astropy.wcs import WCS, FITSFixedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2)
    except Exception as exc:
        msg = f"HDU {hdu_index} has a WCS that astropy cannot parse ({exc}); fix the WCS keywords"
        raise SourceError(src.uri, msg) from None
    if not wcs.has_celestial or wcs.naxis != 2 or not wcs.wcs.lng == 0 or not wcs.wcs.lat == 1:
        ctypes = [str(c) for c in wcs.wcs.ctype]
        msg = (
            f"HDU {hdu_index} has no celestial WCS (CTYPE={ctypes}); a mosaic needs RA/Dec axes "
            "in that order (e.g. RA---TAN, DEC--TAN)"
        )
        raise SourceError(src.uri, msg)
    return wcs


def check_rectified(src: Source, wcs, header, primary, hdu_index: int) -> None:
    """Refuse an image whose pixels are not a rectified (drizzled) sky grid.

    Raises
    ------
    SourceError
        For un-drizzled products (files named ``*_flt``/``_flc``/``_raw``...), SIP or
        lookup-table distortion, or non-square / skewed pixels.
    """
    # The file's own name counts; a FILENAME card alone does not (cutouts of drizzled
    # mosaics inherit the header of one of their input exposures, e.g. '..._flt.fits').
    stem = src.name.lower().removesuffix(".gz").removesuffix(".fits").removesuffix(".fit")
    suffix = next((s for s in _UNDRIZZLED if stem.endswith(s)), None)
    cd = wcs.wcs.get_pc() * wcs.wcs.get_cdelt()[np.newaxis, :]
    scales = np.hypot(cd[0], cd[1]) * 3600.0  # arcsec per pixel along x and y
    cos_angle = abs(float(np.dot(cd[:, 0], cd[:, 1]))) / float(np.prod(np.hypot(cd[0], cd[1])))
    distorted = wcs.sip is not None or wcs.cpdis1 is not None or wcs.det2im1 is not None
    non_square = abs(scales[0] / scales[1] - 1.0) > _SQUARE_TOL or cos_angle > _SQUARE_TOL
    if suffix or distorted or non_square:
        why = []
        if suffix:
            why.append(f"its name ends in '{suffix}' (a calibrated, un-drizzled exposure)")
        if non_square:
            why.append(
                f'its pixels are not square ({scales[0]:.4f}" x {scales[1]:.4f}", axes '
                f"{math.degrees(math.acos(min(1.0, cos_angle))):.2f} deg apart)"
            )
        if distorted:
            why.append("its WCS carries geometric distortion (SIP / lookup tables)")
        msg = (
            f"HDU {hdu_index} is not a drizzled mosaic: {'; '.join(why)}. Tiles cut from it "
            "would not be rectified sky. Use the drizzled product of this dataset instead "
            "(the _drz/_drc file from MAST, or run drizzlepac.astrodrizzle on it)"
        )
        raise SourceError(src.uri, msg)


def plan_images(src: Source, hdul) -> tuple[list[ImagePlan], list[tuple[int, str]]]:
    """Find the image HDUs of an opened product that are mosaics, and why others are not.

    Returns
    -------
    plans : list of ImagePlan
        One per band/image to tile, in HDU order.
    rejected : list of (int, str)
        HDU index and reason for each image HDU that looked like a candidate but cannot be tiled.

    Raises
    ------
    SourceError
        If the file has no 2-D image HDU at all, or if it is an un-drizzled exposure.
    """
    primary = hdul[0].header
    images = []
    for i, hdu in enumerate(hdul):
        header = hdu.header
        if i > 0 and str(header.get("XTENSION", "")).strip().upper() not in ("IMAGE", "IMAGE   "):
            continue
        shape = _image_shape(header)
        extname = str(header.get("EXTNAME", "PRIMARY" if i == 0 else "")).strip().upper()
        if len(shape) >= 2 and math.prod(shape) > 0:
            images.append((i, extname, shape))
    if not images:
        kinds = ", ".join(f"{i}:{type(h).__name__}" for i, h in enumerate(hdul))
        msg = f"has no 2-D image HDU (HDUs: {kinds}); give a FITS image with a celestial WCS"
        raise SourceError(src.uri, msg)
    candidates = [im for im in images if im[1] not in _AUXILIARY]
    if any(im[1] == "SCI" for im in candidates):
        candidates = [im for im in candidates if im[1] == "SCI"]
    plans: list[ImagePlan] = []
    rejected: list[tuple[int, str]] = []
    if not candidates:
        msg = f"has only auxiliary image extensions ({[im[1] for im in images]}), no science image"
        raise SourceError(src.uri, msg)
    for i, extname, shape in candidates:
        header = hdul[i].header
        if len(shape) > 2 and math.prod(shape[:-2]) != 1:
            rejected.append((i, f"HDU {i} is a {len(shape)}-D cube {shape}; give a 2-D image"))
            continue
        try:
            wcs = _celestial_wcs(src, header, i)
        except SourceError as exc:
            rejected.append((i, exc.reason))
            continue
        check_rectified(src, wcs, header, primary, i)  # refuses the whole file
        offset = _data_offset(hdul[i])
        _check_complete(src, header, offset, f"HDU {i} ({extname or 'image'})")
        fp = _footprint_hdu(hdul, i, shape)
        fp_header = hdul[fp[0]].header if fp[0] is not None else None
        fp_offset = _data_offset(hdul[fp[0]]) if fp[0] is not None else None
        if fp[0] is not None:
            _check_complete(src, fp_header, fp_offset, f"HDU {fp[0]} ({fp[1]})")
        plans.append(
            ImagePlan(
                hdu=i,
                extname=extname,
                header=header,
                primary=primary,
                offset=offset,
                footprint_hdu=fp[0],
                footprint_kind=fp[1],
                footprint_header=fp_header,
                footprint_offset=fp_offset,
                wcs=wcs,
            )
        )
    return plans, rejected


def _footprint_hdu(hdul, sci_index: int, shape: tuple[int, ...]) -> tuple[int | None, str]:
    """The WHT (else CTX) extension matching the science HDU's EXTVER and shape."""
    extver = hdul[sci_index].header.get("EXTVER", 1)
    for kind in ("WHT", "CTX"):
        for j, hdu in enumerate(hdul):
            header = hdu.header
            if str(header.get("EXTNAME", "")).strip().upper() != kind:
                continue
            if header.get("EXTVER", 1) != extver:
                continue
            if _image_shape(header) == shape:
                return j, kind
    return None, "finite-nonzero"
