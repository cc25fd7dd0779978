"""``hubcat tune``: bad inputs refused before any work; a tune that writes a first-class model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.cli import main


@pytest.fixture(scope="module")
def cosmos_store(tmp_path_factory, hst_dir):
    """16 real HST tiles (COSMOS F814W, stride 112) in units of 3."""
    from tiling import TileStore, TilingConfig

    store = TileStore.create(
        tmp_path_factory.mktemp("tune-cli") / "tiles",
        TilingConfig(zooms=(1,), stride=112, unit_size=3, measure_sources=False),
    )
    store.add_mosaic(hst_dir / "galsim_cosmos_147246.0_150.416558_1.998697_masknoise.fits")
    return store


def test_too_few_tiles_is_a_clear_error(tmp_path, hst_dir, capsys):
    from tiling import TileStore, TilingConfig

    store = TileStore.create(
        tmp_path / "tiles", TilingConfig(zooms=(2,), stride=112, measure_sources=False)
    )
    store.add_mosaic(hst_dir / "galsim_cosmos_147246.0_150.416558_1.998697_masknoise.fits")
    n = len(store.metadata())
    assert 0 < n < 16
    out = tmp_path / "model"
    code = main(["tune", "--store", store.uri, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"holds {n} tile(s)" in err and "at least 16" in err and "tile more mosaics" in err
    assert not out.exists()


def test_a_base_without_weights_is_a_clear_error(cosmos_store, tmp_path, capsys):
    missing = tmp_path / "absent.pth"
    args = ["tune", "--store", cosmos_store.uri, "--out", str(tmp_path / "m")]
    code = main([*args, "--weights", str(missing), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "absent.pth" in err
    assert not (tmp_path / "m").exists()


def test_a_budget_too_small_for_one_round_is_a_clear_error(cosmos_store, tmp_path, capsys):
    args = ["tune", "--store", cosmos_store.uri, "--out", str(tmp_path / "m"), "--no-progress"]
    code = main([*args, "--batch-size", "3", "--budget", "0.00001"])
    err = capsys.readouterr().err
    assert code == 1 and "less than one round" in err and "at least" in err
    assert not (tmp_path / "m").exists()
    with pytest.raises(SystemExit):
        main([*args, "--budget", "0"])
    assert "positive number of minutes" in capsys.readouterr().err


@pytest.mark.grid
@pytest.mark.slow
def test_tune_writes_a_model_that_loads_and_names_its_tiles(cosmos_store, tmp_path, capsys):
    from catalog.provenance import merkle_root
    from embeddings import EmbedConfig, embed_tiles, load_model, read_model_config

    out = tmp_path / "model"
    args = ["tune", "--store", cosmos_store.uri, "--out", str(out), "--json", "--workers", "1"]
    code = main([*args, "--rounds", "2", "--steps", "2", "--batch-size", "3", "--shards", "1"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    assert summary["rounds_done"] == 2 and summary["units_accepted"] == 2
    config = read_model_config(out)
    record = json.loads((out / "training.json").read_text())
    meta = cosmos_store.metadata().set_index("tile_id")
    tiles = [t for u in cosmos_store.units() for t in u.tile_ids]
    leaves = [f"{t} {meta.loc[t, 'tile_sha256']}".encode() for t in tiles]
    assert record["tiles_merkle_root"] == merkle_root(leaves).hex()
    base = load_model(None)
    assert record["base_weights_sha256"] == base.weights_sha256
    assert record["rounds"] == 2 and record["steps"] == 2 and record["objective"] == "infonce"
    assert summary["weights_sha256"] == config["weights_sha256"]
    tuned = load_model(str(out), config=EmbedConfig(runtime="torch"))
    assert tuned.weights_sha256 == config["weights_sha256"] != base.weights_sha256
    _, pixels = cosmos_store.read_unit(cosmos_store.units()[0].unit_key)
    assert embed_tiles(tuned, pixels).shape == (3, tuned.dim)


@pytest.mark.grid
@pytest.mark.slow
@pytest.mark.parametrize(
    ("recipe", "pooling", "dim"),
    [("same-sky", "centred", 8192), ("sky-pairs", "pairs", 1280 + 8192)],
)
def test_tune_with_a_named_recipe(cosmos_store, tmp_path, capsys, recipe, pooling, dim):
    """--recipe NAME trains that recipe's head; the other flags replace fields."""
    from embeddings import EmbedConfig, embed_tiles, load_model, read_model_config

    out = tmp_path / "model"
    args = ["tune", "--store", cosmos_store.uri, "--out", str(out), "--json", "--workers", "1"]
    args += ["--recipe", recipe, "--rounds", "1", "--steps", "1", "--batch-size", "3"]
    code = main([*args, "--shards", "1"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    config = read_model_config(out)
    assert config["architecture"]["pooling"] == pooling
    assert config["recipe"]["batch_size"] == 3 and config["recipe"]["views"]["rotate"] is False
    tuned = load_model(str(out))
    assert tuned.dim == dim and tuned.resolved.runtime == "torch"  # "auto": see load_tuned
    _, pixels = cosmos_store.read_unit(cosmos_store.units()[0].unit_key)
    vectors = embed_tiles(tuned, pixels)
    assert vectors.shape == (3, dim)
    named = load_model(str(out), config=EmbedConfig(runtime="torch", threads=1))
    np.testing.assert_allclose(embed_tiles(named, pixels), vectors, atol=1e-5)
    with pytest.raises(SystemExit):
        main(["tune", "--store", cosmos_store.uri, "--out", str(out), "--recipe", "sky"])
    assert "invalid choice: 'sky'" in capsys.readouterr().err
