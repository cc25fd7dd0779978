"""Self-supervised tuning: the recipe, deterministic local steps on real tiles, bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from embeddings import (
    DEFAULT_MODEL,
    EmbedConfig,
    EmbeddingModel,
    TileInputError,
    TuneError,
    TuneRecipe,
    ViewParams,
    check_delta,
    local_steps,
    trainable_state,
)

#: A recipe small enough for unit tests (a few seconds on two cores).
SMALL = TuneRecipe(views_per_tile=2, batch_size=8, min_tiles=16, steps_per_unit=2)


@pytest.fixture(scope="module")
def base():
    """The default model's verified pretrained network (torch; no converted runtime needed)."""
    from embeddings import load_base_net

    return load_base_net(DEFAULT_MODEL, EmbedConfig(runtime="torch"))


@pytest.fixture(scope="module")
def real_tiles(hst_dir, tmp_path_factory) -> np.ndarray:
    """16 real tiles of the COSMOS mosaic, cut by the project's tiling into a tile store."""
    from tiling import TileStore, TilingConfig

    path = hst_dir / "galsim_cosmos_147246.0_150.416558_1.998697_masknoise.fits"
    if not path.is_file():
        pytest.skip(f"real HST file {path.name} not found in {hst_dir}")
    config = TilingConfig(zooms=(1,), stride=80, measure_sources=False)
    store = TileStore.open_or_create(tmp_path_factory.mktemp("tiles") / "t", config)
    store.add_mosaic(path)
    tiles = np.concatenate([store.read_unit(u.unit_key)[1] for u in store.units()])
    assert tiles.shape[0] >= 16
    return np.ascontiguousarray(tiles[:16])


def test_recipe_round_trip_and_digest():
    recipe = TuneRecipe(lr=2e-3, views=ViewParams(blur_max=0.5))
    again = TuneRecipe.from_dict(recipe.to_dict())
    assert again == recipe
    assert again.digest() == recipe.digest()
    assert TuneRecipe(lr=3e-3).digest() != recipe.digest()
    with pytest.raises(TuneError, match="unknown keys"):
        TuneRecipe.from_dict({**recipe.to_dict(), "momentum": 0.9})


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("objective", "mae", "not implemented"),
        ("batch_size", 1, "negatives"),
        ("views_per_tile", 1, "a pair"),
        ("lr", 0.0, "must be > 0"),
        ("steps_per_unit", 0, "positive integer"),
        ("base_weight", 1.0, "must be in"),
        ("pooling", "max", "not implemented"),
        ("dim", -1, "or 0"),
        ("pooling", "pairs", "pairs pooling needs pair_dim > 0|rotate"),
        ("pair_dim", 8, "the other poolings pair_dim = 0"),
        ("pair_dim", -1, "non-negative integer"),
    ],
)
def test_recipe_refuses_bad_values(field, value, match):
    with pytest.raises(TuneError, match=match):
        TuneRecipe(**{field: value})


def test_trainable_state_is_seeded_float32(base):
    a = trainable_state(base, SMALL)
    b = trainable_state(base, SMALL)
    c = trainable_state(base, TuneRecipe(seed=1))
    assert set(a) == {
        "norm.weight",
        "norm.bias",
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    }
    assert a["fc1.weight"].shape == (SMALL.hidden, 112)
    assert a["fc2.weight"].shape == (SMALL.dim, SMALL.hidden)
    assert all(v.dtype == np.float32 for v in a.values())
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["fc1.weight"], c["fc1.weight"])


def test_local_steps_deterministic_and_moving(base, real_tiles):
    state = trainable_state(base, SMALL)
    one = local_steps(base, state, real_tiles, SMALL, seed=3, steps=2)
    two = local_steps(base, state, real_tiles, SMALL, seed=3, steps=2)
    other = local_steps(base, state, real_tiles, SMALL, seed=4, steps=2)
    check_delta(one, state)
    assert all(np.array_equal(one[k], two[k]) for k in one), "same inputs gave other weights"
    assert any(not np.array_equal(one[k], state[k]) for k in one), "the weights did not move"
    assert any(not np.array_equal(one[k], other[k]) for k in one), "the seed changed nothing"
    # the input state is not modified in place
    assert all(np.array_equal(state[k], trainable_state(base, SMALL)[k]) for k in state)


def test_too_few_tiles_refused(base, real_tiles):
    state = trainable_state(base, SMALL)
    with pytest.raises(TuneError, match="too few to tune on"):
        local_steps(base, state, real_tiles[:5], SMALL, seed=0, steps=1)


def test_bad_tiles_and_steps_refused(base, real_tiles):
    state = trainable_state(base, SMALL)
    with pytest.raises(TileInputError):
        local_steps(base, state, real_tiles.astype(np.float64), SMALL, seed=0, steps=1)
    with pytest.raises(TuneError, match="steps"):
        local_steps(base, state, real_tiles, SMALL, seed=0, steps=0)


def test_base_without_weights_refused(base):
    """A network with timm's random initialisation is no base to tune from."""
    import timm

    net = timm.create_model(base.spec.timm_name, pretrained=False).eval()
    unweighted = EmbeddingModel(net, base.spec, "random-init", base.weights_path, base.config)
    with pytest.raises(TuneError, match="no verified pretrained weights"):
        trainable_state(unweighted, SMALL)


@pytest.mark.parametrize(
    ("attack", "match"),
    [
        ("nan", "NaN/inf"),
        ("inf", "NaN/inf"),
        ("shape", "shape"),
        ("dtype", "dtype"),
        ("missing", "missing"),
        ("extra", "unexpected"),
        ("list", "numpy array"),
    ],
)
def test_check_delta_rejects_bad_deltas(base, attack, match):
    like = trainable_state(base, SMALL)
    delta = {k: np.zeros_like(v) for k, v in like.items()}
    check_delta(delta, like)  # an honest zero delta passes
    if attack == "nan":
        delta["fc2.bias"][3] = np.nan
    elif attack == "inf":
        delta["fc1.weight"][0, 0] = np.inf
    elif attack == "shape":
        delta["fc1.weight"] = np.zeros((SMALL.hidden, 113), np.float32)
    elif attack == "dtype":
        delta["fc1.bias"] = delta["fc1.bias"].astype(np.float64)
    elif attack == "missing":
        del delta["norm.bias"]
    elif attack == "extra":
        delta["classifier.weight"] = np.zeros((2, 2), np.float32)
    elif attack == "list":
        delta["fc2.bias"] = delta["fc2.bias"].tolist()
    with pytest.raises(TuneError, match=match):
        check_delta(delta, like)


def test_local_steps_refuses_a_bad_state(base, real_tiles):
    state = trainable_state(base, SMALL)
    state["fc2.weight"] = state["fc2.weight"][:, :10].copy()
    with pytest.raises(TuneError, match="shape"):
        local_steps(base, state, real_tiles, SMALL, seed=0, steps=1)


def test_named_recipes():
    from embeddings import RECIPES, named_recipe

    assert named_recipe("default") == TuneRecipe()
    sky = named_recipe("same-sky")
    assert (sky.pooling, sky.dim, sky.views.rotate) == ("centred", 0, False)
    assert sky.views.crop_min == sky.views.crop_max == 1.0 and sky.views.shift_max > 0
    assert TuneRecipe.from_dict(sky.to_dict()) == sky
    pairs = named_recipe("sky-pairs")
    assert (pairs.pooling, pairs.dim, pairs.views.rotate) == ("pairs", 0, False)
    assert pairs.pair_dim > 0 and 0 < pairs.base_weight < 1
    assert TuneRecipe.from_dict(pairs.to_dict()) == pairs
    assert set(RECIPES) == {"default", "same-sky", "sky-pairs"}
    with pytest.raises(TuneError, match="no tuning recipe named 'sky'"):
        named_recipe("sky")


def test_shifted_views_are_translations_at_the_tile_scale():
    """With crop 1, no rotation, no blur, stretch change or noise, a view is the tile moved by
    at most shift_max of its side, the border reflected; without shift_max, the tile itself."""
    import torch
    from scipy import ndimage

    from embeddings._views import make_views

    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.random((64, 64)), 3.0)
    field = (field - field.min()) / np.ptp(field)
    tile = torch.from_numpy(field[None].astype(np.float32))
    still = ViewParams(crop_min=1.0, crop_max=1.0, blur_max=0.0, gamma_max=1.0, noise_max=0.0)
    same = make_views(tile, 3, replace(still, rotate=False), torch.Generator().manual_seed(0))
    np.testing.assert_allclose(same[0].numpy(), np.repeat(tile.numpy(), 3, axis=0), atol=1e-5)
    moved = make_views(
        tile, 6, replace(still, rotate=False, shift_max=0.25), torch.Generator().manual_seed(1)
    )
    for view in moved[0].numpy():
        assert np.abs(view - tile[0].numpy()).max() > 0.02  # it moved
        # some translation by at most 16 px (bilinear: compare on the interior)
        errs = [
            np.abs(view[20:44, 20:44] - tile[0].numpy()[20 - dy : 44 - dy, 20 - dx : 44 - dx])
            for dy in range(-17, 18)
            for dx in range(-17, 18)
        ]
        assert min(float(e.mean()) for e in errs) < 0.2 * float(np.mean(np.abs(errs[0])))


def test_pairs_pooling_refuses_a_projection():
    from embeddings import ViewParams

    with pytest.raises(TuneError, match="use dim = 0"):
        TuneRecipe(pooling="pairs", pair_dim=8, dim=16, views=ViewParams(rotate=False))


def test_a_recipe_without_pairs_keeps_its_format():
    """pair_dim is written only when set, so older recipes keep their digest (and a run
    interrupted before the pairs pooling existed resumes)."""
    assert "pair_dim" not in TuneRecipe().to_dict()
    assert TuneRecipe.from_dict(TuneRecipe().to_dict()) == TuneRecipe()
    from embeddings import named_recipe

    assert named_recipe("sky-pairs").to_dict()["pair_dim"] == 512
