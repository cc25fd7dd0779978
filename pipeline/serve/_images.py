"""Image bytes in and out of the service: tile cutouts as PNG and FITS, uploads read safely.

A cutout PNG is the tile as stored (the tiler's asinh stretch, values in [0, 1]) in 8 bits, north
up (FITS row 0 at the bottom). A cutout FITS holds the stored float32 pixels with the tile's own
WCS, so ``sha256`` of its data as little-endian float32 is the leaf's ``tile_sha256``.

An upload is recognised by its first bytes, never by its name or declared type: FITS
(``SIMPLE  =``) or PNG (the 8-byte PNG signature). A FITS upload is handed to the catalogue as an
``HDUList`` (its SCI or first 2-D image HDU is stretched like catalogue tiles); a PNG is taken as
already stretched (grey levels / max level).
"""

from __future__ import annotations

import hashlib
import io

import numpy as np

from pipeline.serve.errors import BadRequestError, PayloadTooLargeError

__all__ = ["MAX_UPLOAD_PIXELS", "cutout_fits", "cutout_png", "read_upload"]

#: Largest number of pixels an uploaded image may have (after the byte-size limit).
MAX_UPLOAD_PIXELS = 4096 * 4096
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_FITS_MAGIC = b"SIMPLE  ="


def cutout_png(pixels: np.ndarray) -> bytes:
    """8-bit greyscale PNG of a stored tile (values in [0, 1]), north up."""
    from PIL import Image

    grey = np.round(np.clip(np.nan_to_num(pixels), 0.0, 1.0) * 255.0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.flipud(grey), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def cutout_fits(pixels: np.ndarray, wcs, cards: dict[str, object]) -> bytes:
    """FITS (one primary HDU) of a stored tile with its WCS and ``cards`` in the header."""
    from astropy.io import fits

    data = np.ascontiguousarray(pixels, dtype=np.float32)
    header = wcs.to_header() if wcs is not None else fits.Header()
    for key, value in cards.items():
        header[key] = value
    # sha256 of the pixels as float32 little-endian (the leaf's tile_sha256); no room for a comment
    header["TILESHA"] = hashlib.sha256(data.astype("<f4").tobytes()).hexdigest()
    buf = io.BytesIO()
    fits.PrimaryHDU(data, header=header).writeto(buf)
    return buf.getvalue()


def read_upload(data: bytes, *, max_bytes: int, filename: str = "upload"):
    """The query object of an uploaded image: an ``HDUList`` (FITS) or a 2-D array (PNG).

    Returns
    -------
    (query, stretch, description)
        ``query`` for :meth:`catalog.Catalogue.similar`, its ``stretch=`` argument, and a
        description of the upload.

    Raises
    ------
    PayloadTooLargeError
        More than ``max_bytes`` bytes or :data:`MAX_UPLOAD_PIXELS` pixels.
    BadRequestError
        Empty, not FITS or PNG, unreadable, or a FITS without a 2-D image.
    """
    if len(data) > max_bytes:
        msg = (
            f"the upload {filename!r} is {len(data)} bytes; this service accepts at most "
            f"{max_bytes} bytes: crop or bin the image first"
        )
        raise PayloadTooLargeError(msg)
    if not data:
        msg = f"the upload {filename!r} is empty; send a FITS or PNG image in the form field 'file'"
        raise BadRequestError(msg)
    if data.startswith(_PNG_MAGIC):
        return _read_png(data, filename)
    if data.startswith(_FITS_MAGIC):
        return _read_fits(data, filename)
    msg = (
        f"the upload {filename!r} is neither a FITS file (starting with 'SIMPLE  =') nor a PNG "
        f"image (its first bytes are {data[:8]!r}); send a FITS or PNG image"
    )
    raise BadRequestError(msg, status=415)


def _read_png(data: bytes, filename: str):
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
        w, h = image.size
        if w * h > MAX_UPLOAD_PIXELS:  # before decoding: no decompression bomb
            msg = f"the PNG {filename!r} is {w}x{h} pixels; at most {MAX_UPLOAD_PIXELS} pixels are accepted"
            raise PayloadTooLargeError(msg)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            pixels = np.asarray(image, dtype=np.float64) / 65535.0
        elif image.mode == "F":
            pixels = np.asarray(image, dtype=np.float64)
        else:
            pixels = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    except PayloadTooLargeError:
        raise
    except Exception as exc:  # Pillow: UnidentifiedImageError, OSError, SyntaxError, bombs
        msg = f"the PNG {filename!r} cannot be decoded ({exc}); send a valid PNG image"
        raise BadRequestError(msg) from None
    # PNG row 0 is the top of the picture; FITS (and catalogue tiles) start at the bottom
    return np.ascontiguousarray(np.flipud(pixels)), False, f"PNG {filename} {w}x{h}"


def _read_fits(data: bytes, filename: str):
    from astropy.io import fits

    try:
        hdul = fits.HDUList.fromstring(data)
        images = [h for h in hdul if h.is_image and h.data is not None]
    except Exception as exc:  # astropy fails in many ways on a truncated or odd file
        msg = f"the FITS file {filename!r} cannot be read ({exc}); send a complete FITS file"
        raise BadRequestError(msg) from None
    two_d = [h for h in images if h.data.ndim == 2]
    if not two_d:
        shapes = [h.data.shape for h in images] or "none"
        msg = (
            f"the FITS file {filename!r} has no 2-D image HDU (image shapes: {shapes}); "
            "send an image, e.g. the SCI extension of a drizzled mosaic"
        )
        raise BadRequestError(msg)
    npix = max(int(np.prod(h.data.shape)) for h in two_d)
    if npix > MAX_UPLOAD_PIXELS:
        msg = f"the FITS image {filename!r} has {npix} pixels; at most {MAX_UPLOAD_PIXELS} are accepted"
        raise PayloadTooLargeError(msg)
    return hdul, None, f"FITS {filename}"
