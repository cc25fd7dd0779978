"""embed_tiles: unit vectors, augmentation invariance, determinism, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings import EmbeddingModel, TileInputError, embed_tiles
from tiling.augment import augment


@pytest.fixture(scope="module")
def vectors(model: EmbeddingModel, tiles: np.ndarray) -> np.ndarray:
    return embed_tiles(model, tiles)


def test_shape_dtype_unit_norm(model: EmbeddingModel, vectors: np.ndarray):
    assert vectors.shape == (3, model.dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # different tiles give different vectors
    assert float(vectors[0] @ vectors[1]) < 0.999


def test_invariant_to_the_8_symmetries(model: EmbeddingModel, tiles: np.ndarray, vectors):
    moved = np.concatenate([augment(tiles[:1], i) for i in (1, 4, 7)])
    cos = embed_tiles(model, moved) @ vectors[0]
    assert cos.min() >= 0.9999, cos


def _hst_tile(path) -> np.ndarray:
    """A 224x224 cut of a real drizzled ACS mosaic, asinh-stretched to [0, 1]."""
    from astropy.io import fits

    data = fits.getdata(path).astype(np.float64)
    cy, cx = data.shape[0] // 2, data.shape[1] // 2
    cut = data[cy - 112 : cy + 112, cx - 112 : cx + 112]
    lo, hi = np.percentile(cut, [1, 99.5])
    scaled = np.clip((cut - lo) / (hi - lo), 0, 1)
    return (np.arcsinh(10 * scaled) / np.arcsinh(10)).astype(np.float32)


@pytest.mark.slow
def test_invariance_on_a_real_hst_tile(model: EmbeddingModel, hst_dir):
    """Rotating/flipping a real Hubble tile gives the same catalogue vector (cosine >= 0.9999)."""
    tile = _hst_tile(hst_dir / "galsim_cosmos_147246.0_150.416558_1.998697_masknoise.fits")
    assert tile.shape == (224, 224) and tile.std() > 0.01
    batch = np.stack([augment(tile, i) for i in range(8)])
    out = embed_tiles(model, batch)
    cos = out @ out[0]
    assert cos.min() >= 0.9999, cos


def test_deterministic_and_batch_independent(model: EmbeddingModel, tiles: np.ndarray, vectors):
    again = embed_tiles(model, tiles)
    np.testing.assert_array_equal(again, vectors)
    one_by_one = np.concatenate([embed_tiles(model, tiles[i : i + 1]) for i in range(2)])
    np.testing.assert_allclose(one_by_one, vectors[:2], atol=1e-5)


def test_thread_budget_is_respected_and_deterministic(model: EmbeddingModel, tiles, vectors):
    import torch

    before = torch.get_num_threads()
    single = model.with_config(threads=1)
    a = embed_tiles(single, tiles[:1])
    assert torch.get_num_threads() == before  # restored after the call
    np.testing.assert_array_equal(embed_tiles(single, tiles[:1]), a)
    np.testing.assert_allclose(a, vectors[:1], atol=1e-5)


def test_multiband_tiles_map_to_channels(model: EmbeddingModel, tiles: np.ndarray, vectors):
    same = np.repeat(tiles[:1, None], 3, axis=1)  # three identical bands == the single band
    np.testing.assert_allclose(embed_tiles(model, same), vectors[:1], atol=1e-5)
    rgb = np.stack([tiles[0], tiles[1], tiles[2]])[None]
    out = embed_tiles(model, rgb)
    assert out.shape == (1, model.dim) and float(out[0] @ vectors[0]) < 0.9999


def test_pooled_equals_mean_of_augmentation_vectors(model: EmbeddingModel, tiles: np.ndarray):
    pooled, per_aug = embed_tiles(model, tiles[:1], return_augmentations=True)
    assert per_aug.shape == (1, 8, model.dim)
    np.testing.assert_allclose(np.linalg.norm(per_aug, axis=-1), 1.0, atol=1e-5)
    mean = per_aug.mean(axis=1)
    np.testing.assert_allclose(
        pooled, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-6
    )


def test_empty_batch(model: EmbeddingModel):
    out = embed_tiles(model, np.zeros((0, 224, 224), dtype=np.float32))
    assert out.shape == (0, model.dim)
    assert out.dtype == np.float32


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((2, 224, 224), dtype=np.float64), "dtype float64, expected float32"),
        (np.zeros((224, 224), dtype=np.float32), r"shape \(224, 224\)"),
        (np.zeros((2, 224, 200), dtype=np.float32), r"shape \(2, 224, 200\)"),
        (np.zeros((2, 5, 224, 224), dtype=np.float32), r"shape \(2, 5, 224, 224\)"),
        ([[0.0]], "numpy array"),
        (np.full((2, 224, 224), 3.0, dtype=np.float32), r"expected \[0, 1\]"),
    ],
)
def test_bad_tiles_are_rejected(model: EmbeddingModel, bad, match):
    with pytest.raises(TileInputError, match=match):
        embed_tiles(model, bad)


def test_nan_tiles_name_the_first_bad_tile(model: EmbeddingModel, tiles: np.ndarray):
    bad = tiles.copy()
    bad[1, 10, 10] = np.nan
    with pytest.raises(TileInputError, match=r"1 tile.*first at index 1"):
        embed_tiles(model, bad)


def test_resize_only_when_the_model_input_differs(model: EmbeddingModel, tiles: np.ndarray):
    from dataclasses import replace

    import torch

    from embeddings import preprocess

    x = torch.from_numpy(tiles[:2])
    same = preprocess(model, x)
    assert same.shape == (2, 3, 224, 224)
    torch.testing.assert_close(same[:, 1], (x - 0.5) / 0.5)  # no resampling at 224
    bigger = EmbeddingModel(
        model.net, replace(model.spec, input_size=(3, 256, 256)), "0" * 64, model.weights_path
    )
    assert preprocess(bigger, x).shape == (2, 3, 256, 256)
    assert bigger.digest != model.digest


def test_norm_error_is_computed_block_by_block_in_float64():
    """More rows than one block (65,536): the same values as one float64 pass, bad rows found."""
    from embeddings import NORM_TOLERANCE, norm_error

    x = np.random.default_rng(0).normal(size=(70_000, 4)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[66_000] *= 1.01
    got = norm_error(x)
    assert np.array_equal(got, np.abs(np.linalg.norm(x.astype(np.float64), axis=1) - 1.0))
    assert list(np.flatnonzero(got > NORM_TOLERANCE)) == [66_000]
