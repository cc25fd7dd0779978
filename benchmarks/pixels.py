"""Per-tile pixel operations: hubcat's code against the library it reproduces, same run.

For each of the three operations of :mod:`tiling._pixels` that have a well-kept library
equivalent, the benchmark checks that both give identical results on the same tiles and
reports the library's time per tile against hubcat's (median of >= 3 runs over the tiles):

- the asinh stretch: ``astropy.visualization`` (``ManualInterval`` then ``AsinhStretch``);
- sigma-clipped background statistics: ``astropy.stats.sigma_clipped_stats``;
- segmentation: ``photutils.segmentation.detect_sources``.

The tiles are 224x224 boxes of a real HST mosaic (the HDFS image shipped by mpdaf, or the
shared test data) when one is available, else a seeded synthetic field with sources.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from benchmarks._common import Figure

STAGE = "pixels"


def _median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _tiles(n: int) -> list[np.ndarray]:
    """``n`` 224x224 float64 boxes of a real HST image (or a synthetic field)."""
    from astropy.io import fits

    image = None
    try:
        from pipeline.samples import sample_paths

        with fits.open(sample_paths()[1]) as hdul:  # HDFS, WFPC2 F606W, 500x500
            image = next(h.data for h in hdul if h.data is not None and h.data.ndim == 2)
            image = np.asarray(image, dtype=np.float64)
    except Exception:
        image = None
    if image is None:
        rng = np.random.default_rng(0)
        image = rng.normal(0.0, 0.01, (600, 600))
        yy, xx = np.mgrid[0:600, 0:600]
        for _ in range(80):
            x, y, s = rng.uniform(0, 600), rng.uniform(0, 600), rng.uniform(1, 5)
            image += rng.uniform(0.2, 5) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s))
    image = np.nan_to_num(image)
    rng = np.random.default_rng(1)
    h, w = image.shape
    out = []
    for _ in range(n):
        y0, x0 = int(rng.integers(0, h - 224 + 1)), int(rng.integers(0, w - 224 + 1))
        out.append(np.ascontiguousarray(image[y0 : y0 + 224, x0 : x0 + 224]))
    return out


def run(quick: bool = False) -> list[Figure]:
    from astropy.stats import sigma_clipped_stats
    from astropy.visualization import AsinhStretch, ManualInterval
    from photutils.segmentation import detect_sources

    from tiling._pixels import StretchParams, clipped_stats, detect_segments, stretch

    n = 20 if quick else 100
    repeat = 3 if quick else 5
    tiles = _tiles(n)
    figures = []

    # 1. stretch -------------------------------------------------------------------------
    lo, hi = (
        float(v) for v in np.percentile(np.concatenate([t.ravel() for t in tiles]), [1, 99.5])
    )
    params = StretchParams(lo=lo, hi=hi, a=0.1)
    mask = np.ones((224, 224), dtype=bool)

    def ours_stretch():
        return [stretch(t, params, mask) for t in tiles]

    def astropy_stretch():
        transform = AsinhStretch(a=params.a) + ManualInterval(params.lo, params.hi)
        return [np.asarray(transform(t, clip=True), dtype=np.float32) for t in tiles]

    same = all(np.array_equal(a, b) for a, b in zip(ours_stretch(), astropy_stretch(), strict=True))
    t_ours = _median_time(ours_stretch, repeat) / n
    t_lib = _median_time(astropy_stretch, repeat) / n
    figures.append(
        Figure(
            STAGE,
            "stretch: astropy.visualization time/tile",
            t_lib * 1e3,
            "ms",
            "hubcat stretch",
            t_ours * 1e3,
            note=f"identical float32 bytes: {same}",
        )
    )

    # 2. sigma-clipped statistics ------------------------------------------------------------
    samples = [t[::2, ::2].ravel() for t in tiles]

    def ours_stats():
        return [clipped_stats(s, 3.0, 5) for s in samples]

    def astropy_stats():
        return [sigma_clipped_stats(s, sigma=3.0, maxiters=5) for s in samples]

    same = all(
        tuple(map(float, a)) == tuple(map(float, b))
        for a, b in zip(ours_stats(), astropy_stats(), strict=True)
    )
    t_ours = _median_time(ours_stats, repeat) / n
    t_lib = _median_time(astropy_stats, repeat) / n
    figures.append(
        Figure(
            STAGE,
            "clipped stats: astropy.stats time/tile",
            t_lib * 1e3,
            "ms",
            "hubcat clipped_stats",
            t_ours * 1e3,
            note=f"identical to the last bit: {same}",
        )
    )

    # 3. segmentation ----------------------------------------------------------------------
    cases = []
    for t, (_m, med, std) in zip(tiles, ours_stats(), strict=True):
        cases.append((t - med, 1.5 * std))

    def ours_segments():
        return [detect_segments(d, thr, 5, mask) for d, thr in cases]

    def photutils_segments():
        out = []
        for d, thr in cases:
            seg = detect_sources(d, thr, 5, mask=~mask)
            out.append(None if seg is None else seg.data)
        return out

    same = all(
        (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
        for a, b in zip(ours_segments(), photutils_segments(), strict=True)
    )
    t_ours = _median_time(ours_segments, repeat) / n
    t_lib = _median_time(photutils_segments, repeat) / n
    figures.append(
        Figure(
            STAGE,
            "segments: photutils detect_sources time/tile",
            t_lib * 1e3,
            "ms",
            "hubcat detect_segments",
            t_ours * 1e3,
            note=f"identical labels: {same}",
        )
    )
    return figures
