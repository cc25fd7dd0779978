"""Embedding a query image with the catalogue's own model, weights and preprocessing.

How a query image becomes a tile
--------------------------------
1. Pixels: a 2-D array, or the image HDU of a FITS file (the ``SCI`` extension when present,
   else the first HDU with 2-D data). Non-finite pixels (NaN, inf) are treated as outside the
   footprint, as the tiler does; an image with more than half of them is refused.
2. Stretch: a FITS image is always in source units and gets the tiler's stretch: the
   ``stretch_percentiles`` of its valid pixels map to [0, 1], then ``asinh(v/a)/asinh(1/a)``
   (the catalogue's recorded tiling parameters). An array is taken as already stretched when
   every valid value lies in [0, 1] (as :meth:`catalog.Catalogue.tile` returns) and stretched
   like a FITS image otherwise; pass ``stretch=True`` / ``False`` to :meth:`similar` to decide.
3. Size: a non-square image is centre-cropped to its largest square; a square of another side
   than the tile size (224) is resampled to it (area average when shrinking, antialiased
   bilinear when enlarging). It is not cut into several tiles: a query is one tile.
4. The tile is embedded with the 8 flips/rotations pooled, exactly as catalogue tiles were.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from catalog.errors import ModelUnavailableError, QueryError

__all__ = ["embed_query", "prepare_image"]

#: Smallest query image side accepted, in pixels.
MIN_SIDE = 16
#: Largest fraction of non-finite pixels accepted in a query image.
MAX_INVALID = 0.5


def _read_fits(query: object) -> tuple[np.ndarray, str]:
    from astropy.io import fits

    if isinstance(query, fits.HDUList):
        hdus, name = query, "HDUList"
    elif isinstance(query, fits.ImageHDU | fits.PrimaryHDU | fits.CompImageHDU):
        if query.data is None or query.data.ndim != 2:
            msg = f"FITS HDU {query.name!r} holds no 2-D image (shape {getattr(query.data, 'shape', None)})"
            raise QueryError(msg)
        return np.asarray(query.data, dtype=np.float64), f"FITS HDU {query.name}"
    else:
        path = Path(os.fspath(query))
        if not path.is_file():
            msg = f"query image {str(path)!r} does not exist (give a tile_id, a SkyCoord, an array or a FITS file)"
            raise QueryError(msg)
        try:
            with fits.open(path, memmap=False) as hdul:
                data, hname = _pick(hdul, str(path))
                return data, f"FITS {path.name}[{hname}]"
        except OSError as exc:
            msg = f"query image {path} is not a readable FITS file ({exc})"
            raise QueryError(msg) from None
    data, hname = _pick(hdus, name)
    return data, f"{name}[{hname}]"


def _pick(hdul, where: str) -> tuple[np.ndarray, str]:
    candidates = [h for h in hdul if h.is_image and h.data is not None and np.ndim(h.data) == 2]
    sci = [h for h in candidates if h.name.upper() == "SCI"]
    chosen = (sci or candidates or [None])[0]
    if chosen is None:
        msg = f"{where} has no 2-D image HDU to use as a query"
        raise QueryError(msg)
    return np.asarray(chosen.data, dtype=np.float64), chosen.name or "PRIMARY"


def _tiling_params(cat) -> tuple[tuple[float, float], float, int]:
    tiling = cat.manifest.get("tiling") or {}
    first = next(iter(tiling.values()), {}) if isinstance(tiling, dict) else {}
    pct = tuple(first.get("stretch_percentiles", (0.5, 99.9)))
    return (
        (float(pct[0]), float(pct[1])),
        float(first.get("asinh_a", 0.1)),
        int(first.get("tile_size", 224)),
    )


def prepare_image(
    image: np.ndarray,
    *,
    size: int = 224,
    stretch: bool | None = None,
    percentiles: tuple[float, float] = (0.5, 99.9),
    asinh_a: float = 0.1,
    where: str = "query image",
) -> np.ndarray:
    """Turn a 2-D image into one stretched float32 tile (see the module docstring).

    Parameters
    ----------
    image : numpy.ndarray, shape (H, W)
    size : int
        Tile side in pixels.
    stretch : bool or None
        Apply the asinh stretch (``None``: only if some valid value lies outside [0, 1]).
    percentiles, asinh_a
        Stretch parameters (the tiler's).
    where : str
        What the error messages call the image (``"query image"``).

    Returns
    -------
    numpy.ndarray, float32, shape (size, size), values in [0, 1]

    Raises
    ------
    QueryError
        Not 2-D, smaller than :data:`MIN_SIDE`, or more than half of the pixels not finite.
    """
    img = np.asarray(image)
    if img.ndim != 2 or not np.issubdtype(img.dtype, np.number):
        msg = f"{where} must be a 2-D numeric array; got shape {img.shape} and dtype {img.dtype}"
        raise QueryError(msg)
    img = img.astype(np.float64)
    h, w = img.shape
    if min(h, w) < MIN_SIDE:
        msg = f"{where} is {h}x{w} pixels; a query needs at least {MIN_SIDE}x{MIN_SIDE}"
        raise QueryError(msg)
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    img = img[y0 : y0 + side, x0 : x0 + side]
    valid = np.isfinite(img)
    frac = 1.0 - valid.mean()
    if frac > MAX_INVALID:
        msg = (
            f"{where}: {frac:.0%} of its pixels are NaN or infinite (at most {MAX_INVALID:.0%} "
            "allowed); crop it to the part of the footprint with data"
        )
        raise QueryError(msg)
    good = img[valid]
    if stretch is None:
        stretch = bool(good.size) and (good.min() < 0.0 or good.max() > 1.0)
    if stretch:
        from tiling import StretchParams
        from tiling import stretch as asinh_stretch

        lo, hi = np.percentile(good, percentiles)
        if not hi > lo:
            hi = lo + 1.0
        out = asinh_stretch(img, StretchParams(float(lo), float(hi), asinh_a), mask=valid)
    else:
        out = np.where(valid, np.clip(img, 0.0, 1.0), 0.0).astype(np.float32)
    if side != size:
        import torch
        import torch.nn.functional as F

        t = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))[None, None]
        if side > size:
            t = F.interpolate(t, size=(size, size), mode="area")
        else:
            t = F.interpolate(
                t, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        out = t[0, 0].numpy()
    return np.clip(np.ascontiguousarray(out, dtype=np.float32), 0.0, 1.0)


def load_catalogue_model(cat):
    """The catalogue's own embedding model, checked against the manifest's digests."""
    if cat._model is not None:
        return cat._model
    from embeddings import EmbedConfig, load_model
    from hubcat.errors import HubcatError

    info = cat.manifest["model"]
    spec = info.get("spec") or {}
    source = str(spec.get("weights_source") or "")
    weights = source.removeprefix("file:") if source.startswith("file:") else None
    cfg = info.get("config") or {}
    try:
        config = EmbedConfig(
            precision=cfg.get("precision", "fp32"),
            batch_size=int(cfg.get("batch_size", 64)),
            channels_last=bool(cfg.get("channels_last", True)),
        )
        model = load_model(info["name"], weights, config=config)
    except HubcatError as exc:
        msg = (
            f"cannot embed the query: the catalogue's model {info['name']!r} is not available here "
            f"({exc}). Query by tile_id or SkyCoord instead, or install its weights"
        )
        raise ModelUnavailableError(msg) from exc
    if model.weights_sha256 != info["weights_sha256"] or model.digest != info["digest"]:
        msg = (
            f"cannot embed the query: the model {info['name']!r} loaded here (weights "
            f"{model.weights_sha256[:12]}..., digest {model.digest[:12]}...) is not the one the "
            f"catalogue was built with (weights {info['weights_sha256'][:12]}..., digest "
            f"{info['digest'][:12]}...); install the same weights and hubcat version"
        )
        raise ModelUnavailableError(msg)
    cat._model = model
    return model


def embed_query(
    cat, query: object, *, stretch: bool | None = None
) -> tuple[np.ndarray, str, np.ndarray]:
    """Unit vector of an image query (array, FITS path, HDU or HDUList), its description and
    the prepared tile (float32 (224, 224) in [0, 1])."""
    from astropy.io import fits

    pct, a, size = _tiling_params(cat)
    if isinstance(query, np.ndarray):
        description = f"image {query.shape[0]}x{query.shape[1]}" if query.ndim == 2 else "image"
        tile = prepare_image(
            query, size=size, stretch=stretch, percentiles=pct, asinh_a=a, where="query array"
        )
    elif isinstance(query, str | os.PathLike | fits.HDUList | fits.ImageHDU | fits.PrimaryHDU):
        data, description = _read_fits(query)
        tile = prepare_image(
            data,
            size=size,
            stretch=True if stretch is None else stretch,
            percentiles=pct,
            asinh_a=a,
            where=description,
        )
    else:
        msg = (
            f"cannot query with a {type(query).__name__}; give a tile_id (str), a SkyCoord, a 2-D "
            "numpy array, a FITS path/HDU, or a 1-D embedding vector"
        )
        raise QueryError(msg)
    from embeddings import embed_tiles

    model = load_catalogue_model(cat)
    vec = np.asarray(embed_tiles(model, tile[None]), dtype=np.float32)[0]
    vec = vec / np.linalg.norm(vec)
    return vec.astype(np.float32), description, tile
