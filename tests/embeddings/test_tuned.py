"""A tuned model folder (MODEL_DIR): saved, loaded by load_model, named by digest, verified."""

from __future__ import annotations

import json
from hashlib import sha256

import numpy as np
import pytest

from embeddings import (
    DEFAULT_MODEL,
    CorruptWeightsError,
    EmbedConfig,
    TuneError,
    TuneRecipe,
    ViewParams,
    WeightsUnavailableError,
    embed_tiles,
    is_model_dir,
    load_model,
    read_model_config,
    save_tuned_model,
    trainable_state,
    tuned_name,
    verify_weights,
)

RECIPE = TuneRecipe(views_per_tile=2, batch_size=8, min_tiles=16)
RECORD = {"tiles_merkle_root": "ab" * 32, "objective": "infonce", "seed": 0, "steps": 0}


@pytest.fixture(scope="module")
def base():
    from embeddings import load_base_net

    return load_base_net(DEFAULT_MODEL, EmbedConfig(runtime="torch"))


@pytest.fixture(scope="module")
def model_dir(base, tmp_path_factory):
    state = trainable_state(base, RECIPE)
    rng = np.random.default_rng(0)
    state = {
        k: v + 0.01 * rng.standard_normal(v.shape).astype(np.float32) for k, v in state.items()
    }
    return save_tuned_model(tmp_path_factory.mktemp("m") / "tuned", base, state, RECIPE, RECORD)


def test_folder_layout_and_record(model_dir, base):
    assert is_model_dir(model_dir)
    config = read_model_config(model_dir)
    sha = sha256((model_dir / "weights.safetensors").read_bytes()).hexdigest()
    assert config["weights_sha256"] == sha
    assert config["name"] == tuned_name(sha) == f"tuned-{sha[:16]}"
    assert config["base"] == DEFAULT_MODEL
    assert config["base_weights_sha256"] == base.weights_sha256
    assert config["recipe_digest"] == RECIPE.digest()
    assert TuneRecipe.from_dict(config["recipe"]) == RECIPE
    record = json.loads((model_dir / "training.json").read_text())
    assert record["tiles_merkle_root"] == RECORD["tiles_merkle_root"]
    assert record["base_weights_sha256"] == base.weights_sha256
    assert {"objective", "seed", "steps"} <= set(record)


def test_load_model_of_a_folder_on_every_runtime(model_dir, tiles):
    from embeddings import installed_runtimes

    torch_model = load_model(model_dir, config=EmbedConfig(runtime="torch"))
    sha = read_model_config(model_dir)["weights_sha256"]
    assert torch_model.name == tuned_name(sha)
    assert torch_model.weights_sha256 == sha
    verify_weights(torch_model, sha)
    want = embed_tiles(torch_model, tiles)
    assert want.shape == (len(tiles), RECIPE.dim) and want.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(want, axis=1), 1.0, atol=1e-5)
    for runtime in installed_runtimes():
        if runtime == "torch":
            continue
        other = load_model(str(model_dir), config=EmbedConfig(runtime=runtime))
        got = embed_tiles(other, tiles)
        assert other.digest == torch_model.digest
        assert float(np.sum(got * want, axis=1).min()) > 0.9999, runtime


def test_base_weight_blends_the_base_cosine(base, tiles, tmp_path):
    """With base_weight w, the cosine of two tiles is w x the base's plus (1 - w) x the head's."""
    import torch

    from embeddings import preprocess

    w = 0.3
    state = trainable_state(base, RECIPE)
    blend = TuneRecipe(views_per_tile=2, batch_size=8, min_tiles=16, base_weight=w)
    config = EmbedConfig(runtime="torch")
    blended = load_model(
        save_tuned_model(tmp_path / "b", base, state, blend, RECORD), config=config
    )
    alone = load_model(save_tuned_model(tmp_path / "a", base, state, RECIPE, RECORD), config=config)
    assert read_model_config(tmp_path / "b")["architecture"]["base_weight"] == w
    assert blended.dim == RECIPE.dim + base.dim
    x = preprocess(base, torch.from_numpy(np.ascontiguousarray(tiles[:2])))
    with torch.inference_mode():
        out = blended.features(x)
        head = torch.nn.functional.normalize(alone.features(x), dim=-1)
        deep = torch.nn.functional.normalize(base.features(x), dim=-1)
    np.testing.assert_allclose(out.norm(dim=-1).numpy(), 1.0, atol=1e-5)
    want = w * float(deep[0] @ deep[1]) + (1 - w) * float(head[0] @ head[1])
    assert float(out[0] @ out[1]) == pytest.approx(want, abs=1e-5)


def test_centred_pooling_takes_the_tiles_median_code_away(base, tiles, tmp_path):
    """A centred head's vector is the mean local code minus the per-channel (lower) median
    code, without projection (dim 0), and every installed runtime gives the same vectors."""
    import torch

    from embeddings import installed_runtimes, preprocess

    recipe = TuneRecipe(
        views_per_tile=2, batch_size=8, min_tiles=16, hidden=64, dim=0, pooling="centred"
    )
    folder = save_tuned_model(tmp_path / "c", base, trainable_state(base, recipe), recipe, RECORD)
    arch = read_model_config(folder)["architecture"]
    assert (arch["pooling"], arch["dim"], arch["hidden"]) == ("centred", 0, 64)
    model = load_model(folder, config=EmbedConfig(runtime="torch"))
    assert model.dim == 64
    x = preprocess(base, torch.from_numpy(np.ascontiguousarray(tiles[:3])))
    with torch.inference_mode():
        codes = model.net.head.local(model.net.forward_features(x))
        want = codes.mean(dim=1) - codes.median(dim=1).values
        got = model.features(x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    ref = embed_tiles(model, tiles)
    for runtime in installed_runtimes():
        if runtime != "torch":
            other = embed_tiles(load_model(folder, config=EmbedConfig(runtime=runtime)), tiles)
            assert float(np.sum(other * ref, axis=1).min()) > 0.9999, runtime
    auto = load_model(folder)
    assert auto.resolved.runtime == "torch"
    assert "centred pooling" in auto.resolved.note
    if "openvino" in installed_runtimes():
        named = load_model(folder, config=EmbedConfig(runtime="openvino"))
        assert named.resolved.runtime == "openvino"


def test_unknown_pooling_in_a_folder_refused(model_dir, tmp_path):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "hubcat-model.json").read_text())
    config["architecture"]["pooling"] = "max"
    (copy / "hubcat-model.json").write_text(json.dumps(config))
    with pytest.raises(CorruptWeightsError, match="pooling 'max'"):
        load_model(copy, config=EmbedConfig(runtime="torch"))


def test_tuned_digest_names_the_tune(model_dir, base):
    tuned = load_model(model_dir, config=EmbedConfig(runtime="torch"))
    record = tuned.record()
    assert record["model"] == tuned.name and record["weights_sha256"] == tuned.weights_sha256
    assert record["tuned"]["base_weights_sha256"] == base.weights_sha256
    assert record["dim"] == RECIPE.dim
    assert tuned.digest != base.digest


def test_tampered_weights_refused(model_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    data = bytearray((copy / "weights.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (copy / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(CorruptWeightsError, match="sha256"):
        load_model(copy, config=EmbedConfig(runtime="torch"))


def test_other_base_weights_refused(model_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "hubcat-model.json").read_text())
    config["base_weights_sha256"] = "0" * 64
    (copy / "hubcat-model.json").write_text(json.dumps(config))
    with pytest.raises(CorruptWeightsError, match="trained on"):
        load_model(copy, config=EmbedConfig(runtime="torch"))


def test_missing_folder_and_not_a_model(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="not a tuned model folder"):
        load_model(tmp_path / "nowhere", config=EmbedConfig(runtime="torch"))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "hubcat-model.json").write_text('{"format": "other"}')
    with pytest.raises(CorruptWeightsError, match="not a hubcat-tuned-model"):
        load_model(tmp_path / "x", config=EmbedConfig(runtime="torch"))


def test_save_refuses_bad_input(base, tmp_path):
    state = trainable_state(base, RECIPE)
    with pytest.raises(TuneError, match="lacks"):
        save_tuned_model(tmp_path / "a", base, state, RECIPE, {"objective": "infonce"})
    bad = dict(state)
    bad["fc1.bias"] = np.full_like(bad["fc1.bias"], np.nan)
    with pytest.raises(TuneError, match="NaN"):
        save_tuned_model(tmp_path / "b", base, bad, RECIPE, RECORD)
    other = tmp_path / "c"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(TuneError, match="not a tuned model"):
        save_tuned_model(other, base, state, RECIPE, RECORD)


PAIRS = TuneRecipe(
    views_per_tile=2,
    batch_size=8,
    min_tiles=16,
    hidden=32,
    dim=0,
    pooling="pairs",
    pair_dim=4,
    base_weight=0.5,
    views=ViewParams(rotate=False),
)


def test_pairs_pooling_sums_code_products_at_each_offset(base, tiles, tmp_path):
    """A pairs head's vector is, per offset d, the signed square root of the sum over positions
    p of (U c_p) * (V c_{p+d}), c the background-centred codes; saved and loaded with its
    pair_dim, blended with the base vector, and the same on every installed runtime."""
    import torch

    from embeddings import installed_runtimes, preprocess
    from embeddings._tunednet import PAIR_OFFSETS

    folder = save_tuned_model(tmp_path / "p", base, trainable_state(base, PAIRS), PAIRS, RECORD)
    arch = read_model_config(folder)["architecture"]
    assert (arch["pooling"], arch["pair_dim"]) == ("pairs", 4)
    model = load_model(folder, config=EmbedConfig(runtime="torch"))
    assert model.dim == base.dim + 4 * len(PAIR_OFFSETS)
    head = model.net.head
    x = preprocess(base, torch.from_numpy(np.ascontiguousarray(tiles[:2])))
    with torch.inference_mode():
        fmap = model.net.forward_features(x)
        codes = head.local(fmap)
        c = codes - codes.median(dim=1, keepdim=True).values
        a = head.pair_u(c).unflatten(1, fmap.shape[2:]).numpy()
        b = head.pair_v(c).unflatten(1, fmap.shape[2:]).numpy()
        got = head(fmap).numpy()
    h, w = fmap.shape[2:]
    want = []
    for dy, dx in PAIR_OFFSETS:
        total = np.zeros((2, 4))
        for y in range(h):
            for x0 in range(w):
                if 0 <= y + dy < h and 0 <= x0 + dx < w:
                    total += a[:, y, x0] * b[:, y + dy, x0 + dx]
        want.append(np.sign(total) * np.sqrt(np.abs(total)))
    np.testing.assert_allclose(got, np.concatenate(want, axis=1), rtol=1e-4, atol=1e-4)
    ref = embed_tiles(model, tiles)
    for runtime in installed_runtimes():
        if runtime != "torch":
            other = embed_tiles(load_model(folder, config=EmbedConfig(runtime=runtime)), tiles)
            assert float(np.sum(other * ref, axis=1).min()) > 0.9999, runtime


def test_pairs_augmentation_order_brings_every_flip_and_rotation_home(base):
    """The pooled pairs of a flipped or rotated feature map, reordered by augmentation_order,
    equal the pairs of the map itself, so the 8 outputs embed_tiles pools add the same
    directions into each block (without the reordering they would not)."""
    import torch

    from embeddings._tune import build_tuned_net
    from tiling.augment import AUGMENTATIONS, augment

    net = build_tuned_net(base, PAIRS)
    order = net.augmentation_order()
    assert order.shape == (len(AUGMENTATIONS), net.num_features)
    start = net.num_features - net.head.out_dim
    channels = net.head.norm.normalized_shape[0]
    fmap = torch.randn(1, channels, 9, 9, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        home = net.head(fmap)[0].numpy()
        for i, name in enumerate(AUGMENTATIONS):
            moved = torch.from_numpy(np.ascontiguousarray(augment(fmap.numpy(), i)))
            out = torch.zeros(net.num_features)
            out[start:] = net.head(moved)[0]
            aligned = out.gather(0, order[i])[start:].numpy()
            np.testing.assert_allclose(aligned, home, rtol=1e-4, atol=1e-4, err_msg=name)
            if i:
                assert not np.allclose(out[start:].numpy(), home, atol=1e-3), name
    np.testing.assert_array_equal(order[0].numpy(), np.arange(net.num_features))
    assert build_tuned_net(base, RECIPE).augmentation_order() is None


def test_embed_tiles_of_a_turned_tile_permutes_the_pair_blocks(base, tiles, tmp_path):
    """The 8 augmentations of a turned tile are the tile's own 8, so a pairs model's vector of
    a tile turned by g is the tile's vector with its pair blocks taken from the offsets g^-1 d:
    exactly, and not the same vector (as it would be without the alignment)."""
    import torch

    from tiling.augment import AUGMENTATIONS, augment

    folder = save_tuned_model(tmp_path / "p", base, trainable_state(base, PAIRS), PAIRS, RECORD)
    model = load_model(folder, config=EmbedConfig(runtime="torch"))
    order = model.net.augmentation_order()
    probe = np.arange(25).reshape(5, 5)
    home = embed_tiles(model, tiles[:2])
    split = base.dim
    for i in range(1, len(AUGMENTATIONS)):
        inverse = next(j for j in range(8) if (augment(augment(probe, i), j) == probe).all())
        turned = embed_tiles(model, np.ascontiguousarray(augment(tiles[:2], i)))
        want = torch.from_numpy(home).gather(1, order[inverse].expand(2, -1)).numpy()
        np.testing.assert_allclose(turned, want, atol=2e-5, err_msg=AUGMENTATIONS[i])
        np.testing.assert_allclose(turned[:, :split], home[:, :split], atol=2e-5)
        assert not np.allclose(turned[:, split:], home[:, split:], atol=1e-3), AUGMENTATIONS[i]


def test_pairs_pooling_refuses_a_projection_and_rotated_views(base):
    from embeddings._tunednet import LocalHead

    with pytest.raises(ValueError, match="dim must be 0"):
        LocalHead(16, 8, 4, "pairs", 2)
    with pytest.raises(TuneError, match="rotate=False"):
        TuneRecipe(pooling="pairs", pair_dim=4, dim=0, views=ViewParams(rotate=True))
