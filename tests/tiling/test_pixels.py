"""Pixel kernels that replace library calls for speed must give the library's results exactly."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats

from tiling._pixels import clipped_stats


def _cases():
    rng = np.random.default_rng(7)
    yield "normal", rng.normal(0.3, 0.01, 12544)
    yield "odd size", rng.normal(0.0, 1.0, 301)
    yield "outliers", np.concatenate([rng.normal(0, 0.01, 4000), rng.uniform(1, 50, 40)])
    yield "quantised", np.round(rng.normal(0, 1, 999), 1)
    yield "half zeros", np.where(np.arange(2000) < 1000, 0.0, rng.normal(0, 1, 2000))
    yield "negative zeros", np.full(64, -0.0)
    yield "constant", np.full(500, 1.5)
    yield "single", np.array([2.0])


@pytest.mark.parametrize(
    ("name", "values"), list(_cases()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_clipped_stats_equal_astropy_bit_for_bit(name, values):
    want = sigma_clipped_stats(values, sigma=3.0, maxiters=5)
    got = clipped_stats(values, 3.0, 5)
    for w, g in zip(want, got, strict=True):
        assert np.float64(w).tobytes() == np.float64(g).tobytes(), (name, want, got)


@pytest.mark.parametrize("zoom", [2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("coverage", ["full", "partial"])
def test_bin_box_sums_equal_numpy_reduction_bit_for_bit(zoom, coverage):
    from tiling._pixels import bin_box

    rng = np.random.default_rng(zoom)
    t = 40
    big = rng.normal(0.0, 1.0, (t * zoom + 9, t * zoom + 9))
    big[rng.random(big.shape) < 0.2] = -0.0
    big[::7] = np.round(big[::7], 1)  # ties and exact zeros
    values = big[3 : 3 + t * zoom, 5 : 5 + t * zoom]  # a view, as cut from a block
    valid = np.ones(values.shape, dtype=bool)
    if coverage == "partial":
        valid = rng.random(values.shape) > 0.3
        values = np.where(valid, values, np.nan)
    clean = np.where(valid, values, 0.0)
    s = clean.reshape(t, zoom, t, zoom).sum(axis=(1, 3))
    c = valid.reshape(t, zoom, t, zoom).sum(axis=(1, 3))
    want = np.divide(s, c, out=np.zeros_like(s), where=c > 0)
    binned, mask = bin_box(values, valid, zoom)
    assert binned.tobytes() == want.tobytes()
    np.testing.assert_array_equal(mask, c > 0)


@pytest.mark.parametrize("seed", range(6))
def test_detect_segments_equal_photutils_label_for_label(seed):
    from photutils.segmentation import detect_sources

    from tiling._pixels import detect_segments

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:120, 0:130]
    data = rng.normal(0.0, 1.0, yy.shape)
    for _ in range(25):
        x0, y0, s = rng.uniform(0, 130), rng.uniform(0, 120), rng.uniform(0.5, 6.0)
        data += rng.uniform(2, 40) * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s))
    valid = np.ones(data.shape, dtype=bool)
    if seed % 2:
        valid[:, :20] = False
        valid[rng.random(data.shape) < 0.02] = False
    want = detect_sources(data, 3.0, 5, mask=~valid)
    got = detect_segments(data, 3.0, 5, valid)
    assert want is not None and got is not None
    np.testing.assert_array_equal(got, want.data)
    assert detect_segments(data, 1e9, 5, valid) is None


def _recorded_formula(values, lo, hi, a):
    """The stretch as recorded in the provenance: asinh(v / a) / asinh(1 / a), v clipped."""
    span = hi - lo
    v = np.subtract(np.asarray(values, dtype=np.float64), lo)
    v /= span if span > 0 else 1.0
    np.clip(v, 0.0, 1.0, out=v)
    v /= a
    np.arcsinh(v, out=v)
    v /= np.arcsinh(1.0 / a)
    return v


@pytest.mark.parametrize(("lo", "hi", "a"), [(-0.01, 2.5, 0.1), (0.0, 1.0, 0.02), (0.3, 0.3, 0.1)])
def test_stretch_through_astropy_gives_the_recorded_bytes(lo, hi, a):
    """The astropy.visualization stretch reproduces the recorded formula byte for byte, so the
    sha256 of every tile already in a store is unchanged."""
    from tiling._pixels import StretchParams, stretch

    rng = np.random.default_rng(0)
    values = rng.normal(0.2, 0.5, (101, 101))
    values[5, 7] = np.nan
    mask = rng.random((101, 101)) > 0.1
    mask[5, 7] = True  # an unmasked NaN becomes 0
    got = stretch(values, StretchParams(lo, hi, a), mask)
    want = _recorded_formula(values, lo, hi, a)
    want[~mask] = 0.0
    want = np.nan_to_num(want, nan=0.0).astype(np.float32)
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()
