"""Pixel operations of a tile: footprint, binning, asinh stretch, background and sources.

Stretch limits: per mosaic, not per tile
----------------------------------------
Each mosaic (one band of one file) gets ONE pair of limits, the ``stretch_percentiles`` of its
valid pixels (sampled every k-th row, at most ``stretch_sample`` pixels), applied to every tile
at every zoom as ``asinh(v / a) / asinh(1 / a)`` with ``v = clip((x - lo) / (hi - lo), 0, 1)``.
Mean-binning preserves surface brightness, so the same limits are right at every zoom.

Why not per tile: per-tile limits stretch every tile to fill [0, 1], so an empty patch of sky
becomes amplified noise that looks like a rich field, a tile with one saturated star crushes
everything else to black, and the same galaxy straddling two tiles gets two different
renderings. Similarity search then matches on the stretch rather than on the sky. Per-mosaic
limits keep brightness comparable across the tiles of a mosaic (a faint field looks faint),
cost two numbers of provenance per mosaic instead of two per tile, and make the stored bytes a
pure function of the source pixels, the box and the recorded ``(lo, hi, a)``. The price is that
mosaics of very different depth still differ in contrast, which the embedding model's own
normalisation and the augmentation pooling soften.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Source columns of a tile when no source is found or sources are not measured.
NO_SOURCES = {
    "bkg_median": float("nan"),
    "bkg_rms": float("nan"),
    "n_sources": 0,
    "brightest_flux": float("nan"),
    "brightest_size_arcsec": float("nan"),
    "brightest_x": float("nan"),
    "brightest_y": float("nan"),
    "has_extended": False,
}

__all__ = [
    "StretchParams",
    "bin_box",
    "clipped_stats",
    "detect_segments",
    "source_stats",
    "stretch",
]


@dataclass(frozen=True)
class StretchParams:
    """Recorded parameters of the asinh stretch of one mosaic (source units for ``lo``/``hi``)."""

    lo: float
    hi: float
    a: float

    def to_dict(self) -> dict[str, float]:
        """The parameters as a JSON-ready dict.

        Returns
        -------
        dict of str to float
            ``{"lo": ..., "hi": ..., "a": ...}``.
        """
        return {"lo": self.lo, "hi": self.hi, "a": self.a}


def stretch(
    values: np.ndarray, params: StretchParams, mask: np.ndarray | None = None
) -> np.ndarray:
    """Map source values to [0, 1] with the recorded asinh stretch.

    Parameters
    ----------
    values : numpy.ndarray, shape (H, W)
        Binned source pixels (source units, e.g. electron / s).
    params : StretchParams
    mask : numpy.ndarray of bool, shape (H, W), optional
        Valid pixels; invalid ones are set to 0.

    Returns
    -------
    numpy.ndarray of float32, shape (H, W), in [0, 1]
    """
    from astropy.visualization import AsinhStretch, ManualInterval

    # astropy's interval then asinh stretch: the recorded formula, operation for operation
    # (the same float32 bytes as the former hand-written code, and no slower: 3.29 ms against
    # 3.55 ms per tile, `python -m benchmarks pixels`). A flat mosaic (hi == lo) maps to 0.
    hi = params.hi if params.hi > params.lo else params.lo + 1.0
    transform = AsinhStretch(a=params.a) + ManualInterval(params.lo, hi)
    v = np.array(values, dtype=np.float64)  # a copy: astropy works in place on it
    transform(v, clip=True, out=v)
    if mask is not None:
        v[~mask] = 0.0
    if not np.isfinite(v).all():  # only unmasked NaN can be left (clip bounds the rest)
        np.nan_to_num(v, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    return v.astype(np.float32)


def bin_box(values: np.ndarray, valid: np.ndarray, zoom: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean-bin a box by ``zoom`` over its valid pixels.

    Parameters
    ----------
    values : numpy.ndarray, shape (T * zoom, T * zoom)
        Source pixels (float64; invalid ones may be anything, even NaN).
    valid : numpy.ndarray of bool, same shape
        Footprint mask.
    zoom : int
        Binning factor.

    Returns
    -------
    binned : numpy.ndarray of float64, shape (T, T)
        Mean of the valid pixels of each ``zoom x zoom`` block, 0 where none is valid.
    mask : numpy.ndarray of bool, shape (T, T)
        Whether the block had at least one valid pixel.
    """
    everywhere = bool(valid.all())
    clean = values if everywhere else np.where(valid, values, 0.0)
    if zoom == 1:
        return clean, valid.copy()
    t = values.shape[0] // zoom
    if t < 2 or zoom > _FAST_BIN_MAX:
        s = np.ascontiguousarray(clean).reshape(t, zoom, t, zoom).sum(axis=(1, 3))
    else:
        s = _block_sums(clean, zoom, t)
    if everywhere:
        c = np.full((t, t), zoom * zoom, dtype=np.int64)
    else:
        c = _block_counts(valid, zoom, t)
    mask = c > 0
    binned = np.divide(s, c, out=np.zeros_like(s), where=mask)
    return binned, mask


#: Largest zoom for which :func:`_block_sums` reproduces numpy's summation order (tested).
_FAST_BIN_MAX = 6


def _block_sums(clean: np.ndarray, zoom: int, t: int) -> np.ndarray:
    """``clean.reshape(t, z, t, z).sum(axis=(1, 3))``, bit for bit, about 5x faster.

    numpy's multi-axis reduction walks the input in memory order: for each source row of a
    bin it adds the row's ``z`` values left to right, then adds that to the running total of
    the bin, starting from 0. The same additions in the same order, done as ``z * z``
    whole-array adds instead of one strided reduction; ``tests/tiling/test_pixels.py`` checks
    equality against numpy (for ``z > 6`` or ``t < 2`` numpy groups differently, so
    :func:`bin_box` calls it directly).
    """
    total = np.zeros((t, t))
    for a in range(zoom):
        rows = clean[a::zoom]
        row = rows[:, 0::zoom] + rows[:, 1::zoom]
        for b in range(2, zoom):
            row += rows[:, b::zoom]
        total += row
    return total


def _block_counts(valid: np.ndarray, zoom: int, t: int) -> np.ndarray:
    """Valid pixels per ``zoom x zoom`` bin (integer sums: exact in any order)."""
    c = np.zeros((t, t), dtype=np.int64)
    for a in range(zoom):
        rows = valid[a::zoom]
        for b in range(zoom):
            c += rows[:, b::zoom]
    return c


def _median_sorted(srt: np.ndarray, lo: int, hi: int) -> float:
    """``numpy.median`` of ``srt[lo:hi]`` (sorted, finite), bit for bit.

    numpy averages the middle element(s) with a sum that starts from +0.0, so a median of
    -0.0 comes out as 0.0; the ``0.0 +`` keeps that.
    """
    n = hi - lo
    k = lo + n // 2
    if n % 2:
        return float(0.0 + srt[k])
    return float((0.0 + srt[k - 1] + srt[k]) / 2.0)


def _std(x: np.ndarray) -> float:
    """``numpy.nanstd`` (ddof 0) of a finite 1-D array, bit for bit: same operations, same order."""
    d = x - np.sum(x, keepdims=True) / x.size
    return float(np.sqrt(np.sum(d * d) / x.size))


def clipped_stats(values: np.ndarray, sigma: float, maxiters: int) -> tuple[float, float, float]:
    """Sigma-clipped mean, median and standard deviation of finite values.

    The same algorithm and arithmetic as ``astropy.stats.sigma_clipped_stats(values,
    sigma=sigma, maxiters=maxiters)`` (median centre, population std, iterate until nothing is
    clipped; astropy without bottleneck, whose ``nanmedian``/``nanstd`` are numpy's), so the
    results are identical to the last bit. Kept hand-written because it runs once per tile on
    the tiling hot path and astropy takes 3.9x as long on the same 224x224 HST tiles (5.26 ms
    against 1.36 ms per tile, identical results; `python -m benchmarks pixels`, median of 5,
    2 shared cores).

    Parameters
    ----------
    values : numpy.ndarray of float64, shape (N,)
        Finite values (N >= 1).
    sigma : float
        Clipping threshold in standard deviations (both sides).
    maxiters : int
        Maximum number of clipping iterations.

    Returns
    -------
    mean, median, std : float
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    # The kept values are always those of the original within [low, high], so in a sorted
    # copy they are one contiguous range: the medians cost a binary search each instead of a
    # partition. The standard deviation is summed in the original order, as astropy does.
    srt = np.sort(data)
    first, last = 0, srt.size
    for _ in range(maxiters):
        cen, std = _median_sorted(srt, first, last), _std(data)
        lo, hi = cen - std * sigma, cen + std * sigma
        kept = data[(data >= lo) & (data <= hi)]
        changed = data.size != kept.size
        data = kept
        if not changed or data.size == 0:
            break
        view = srt[first:last]
        first, last = (
            first + int(np.searchsorted(view, lo, "left")),
            first + int(np.searchsorted(view, hi, "right")),
        )
    if data.size == 0:
        return float("nan"), float("nan"), float("nan")
    return float(np.mean(data)), _median_sorted(srt, first, last), _std(data)


#: 8-connectivity, photutils' default for ``detect_sources``.
_EIGHT = np.ones((3, 3), dtype=bool)


def detect_segments(
    data: np.ndarray, threshold: float, npixels: int, mask: np.ndarray | None = None
) -> np.ndarray | None:
    """``photutils.segmentation.detect_sources(data, threshold, npixels, mask=~mask).data``.

    The same segmentation, label for label (pixels above ``threshold``, 8-connected, segments
    of fewer than ``npixels`` removed, the rest numbered consecutively in scan order), with
    the per-segment Python loop of photutils replaced by one ``bincount``; it runs once per
    tile. ``tests/tiling/test_pixels.py`` compares it with photutils. Kept hand-written because
    photutils takes 11.6x as long on the same 224x224 HST tiles (21.4 ms against 1.84 ms per
    tile, identical labels; `python -m benchmarks pixels`, median of 5, 2 shared cores).

    Parameters
    ----------
    data : numpy.ndarray, shape (H, W)
        Background-subtracted image.
    threshold : float
        Detection threshold (data units).
    npixels : int
        Minimum number of connected pixels of a segment.
    mask : numpy.ndarray of bool, shape (H, W), optional
        Valid pixels (True); invalid ones are never part of a segment.

    Returns
    -------
    numpy.ndarray of int32, shape (H, W), or None
        Segment labels (0 = background); None when nothing is detected.
    """
    from scipy.ndimage import label

    above = data > threshold
    if mask is not None:
        above &= mask
    if not above.any():
        return None
    labels, n = label(above, structure=_EIGHT)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= npixels
    keep[0] = False
    kept = int(np.count_nonzero(keep))
    if kept == 0:
        return None
    if kept == n:
        return labels
    label_map = np.zeros(n + 1, dtype=labels.dtype)
    label_map[keep] = np.arange(1, kept + 1, dtype=labels.dtype)
    return label_map[labels]


def source_stats(
    binned: np.ndarray,
    mask: np.ndarray,
    *,
    zoom: int,
    pixel_scale_arcsec: float,
    nsigma: float,
    npixels: int,
    extended_sigma_arcsec: float,
) -> dict[str, object]:
    """Background and detected sources of one binned tile (photutils segmentation).

    The background and its noise are the sigma-clipped median and standard deviation of every
    4th valid pixel (``[::2, ::2]``; 3 sigma, 5 iterations, identical to astropy's
    ``sigma_clipped_stats``: see :func:`clipped_stats`); sources are ``photutils.segmentation
    .detect_sources`` segments (computed by :func:`detect_segments`, identically) of at least
    ``npixels`` connected pixels ``nsigma`` above it.
    For each segment the flux (background-subtracted sum, in source units x source pixels) and
    the flux-weighted second-moment radius are computed with one ``bincount`` per moment.

    Parameters
    ----------
    binned : numpy.ndarray, shape (T, T)
        Mean-binned source pixels of the tile.
    mask : numpy.ndarray of bool, shape (T, T)
        Valid pixels.
    zoom : int
        Binning factor (fluxes are scaled by ``zoom**2`` to source pixels).
    pixel_scale_arcsec : float
        Arcsec per binned pixel.
    nsigma, npixels, extended_sigma_arcsec
        See :class:`tiling.TilingConfig`.

    Returns
    -------
    dict
        ``bkg_median``, ``bkg_rms`` (source units), ``n_sources`` (int), ``brightest_flux``
        (source units x pixel), ``brightest_size_arcsec`` (second-moment radius),
        ``brightest_x``/``brightest_y`` (tile pixels), ``has_extended`` (bool),
        ``extended_xy`` (list of (x, y) tile-pixel centroids of extended sources).
    """
    empty = {**NO_SOURCES, "extended_xy": []}
    good = binned[::2, ::2][mask[::2, ::2]]  # every 4th pixel: plenty for two numbers
    if good.size < max(16, npixels):
        return empty
    _mean, median, std = clipped_stats(good, 3.0, 5)
    empty["bkg_median"], empty["bkg_rms"] = float(median), float(std)
    if not np.isfinite(std) or std <= 0:
        return empty
    data = binned - median
    threshold = nsigma * std
    seg = detect_segments(data, threshold, npixels, mask)
    if seg is None:
        return empty
    labels_all = seg.ravel()
    where = np.flatnonzero(labels_all)  # only the segment pixels enter the moments
    labels = labels_all[where]
    n = int(labels.max()) + 1
    values = data.ravel()[where]
    w = np.clip(values, 0.0, None)
    y, x = np.divmod(where, data.shape[1])
    x, y = x.astype(np.float64), y.astype(np.float64)
    flux = np.bincount(labels, weights=values, minlength=n)[1:]
    sw = np.bincount(labels, weights=w, minlength=n)[1:]
    sw_safe = np.where(sw > 0, sw, 1.0)
    mx = np.bincount(labels, weights=w * x, minlength=n)[1:] / sw_safe
    my = np.bincount(labels, weights=w * y, minlength=n)[1:] / sw_safe
    mxx = np.bincount(labels, weights=w * x * x, minlength=n)[1:] / sw_safe - mx**2
    myy = np.bincount(labels, weights=w * y * y, minlength=n)[1:] / sw_safe - my**2
    sigma_px = np.sqrt(np.clip((mxx + myy) / 2.0, 0.0, None))
    sigma_arcsec = sigma_px * pixel_scale_arcsec
    present = np.bincount(labels, minlength=n)[1:] > 0
    idx = np.flatnonzero(present)
    best = idx[np.argmax(flux[idx])]
    extended = idx[sigma_arcsec[idx] >= extended_sigma_arcsec]
    return {
        "bkg_median": float(median),
        "bkg_rms": float(std),
        "n_sources": len(idx),
        "brightest_flux": float(flux[best] * zoom * zoom),
        "brightest_size_arcsec": float(sigma_arcsec[best]),
        "brightest_x": float(mx[best]),
        "brightest_y": float(my[best]),
        "has_extended": bool(extended.size),
        "extended_xy": [(float(mx[i]), float(my[i])) for i in extended],
    }
