"""The search-quality benchmark's object-retrieval protocol: an injected tile's own sky."""

from __future__ import annotations

import numpy as np

from benchmarks.quality import K, object_retrieval, own_sky


def _mosaics(n_side: int, size: int = 224):
    """Two mosaics of n_side x n_side grid tiles at half-tile stride (only the origins matter)."""
    steps = range(0, n_side * size // 2, size // 2)
    origins = [(x, y) for y in steps for x in steps]
    return [(None, None, list(origins), None), (None, None, list(origins), None)]


def test_own_sky_is_the_source_tile_and_its_overlapping_neighbours_in_the_same_mosaic():
    mosaics = _mosaics(5)
    per_mosaic = 25
    centre = 2 * 5 + 2  # (224, 224): the middle of the first mosaic
    corner = per_mosaic + 0  # (0, 0) of the second mosaic
    near_centre, near_corner = own_sky(mosaics, np.array([centre, corner]))
    assert sorted(near_centre) == [6, 7, 8, 11, 12, 13, 16, 17, 18]
    assert sorted(near_corner) == [per_mosaic + i for i in (0, 1, 5, 6)]


def test_own_sky_tiles_neither_count_nor_take_a_place():
    rng = np.random.default_rng(0)
    dim, n_grid = 64, 80
    grid = rng.normal(size=(n_grid, dim))
    kinds = ["arc"] * 12 + ["ring"] * 12
    kind_dir = {k: rng.normal(size=dim) for k in set(kinds)}
    sources = np.arange(len(kinds)) * 3
    # each injected tile is its source grid tile plus a weaker object signal: its own sky is
    # nearer to it than any tile of the same kind
    objects = np.array([grid[s] + kind_dir[k] for s, k in zip(sources, kinds, strict=True)])

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    g, o = unit(grid), unit(objects)
    exclude = [np.array([s, s + 1, s + 2]) for s in sources]
    ranked = object_retrieval(g, o, kinds)
    left_out = object_retrieval(g, o, kinds, exclude)
    # ranked, the source grid tile comes first and pushes one same-kind tile out of the K
    assert ranked == (K - 1) / K
    # left out, every injected tile's K nearest are all of its kind
    assert left_out == 1.0
