"""``hubcat embed`` on a real tile store: writes vectors next to the tiles and resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embeddings import EmbeddingModel, EmbeddingStore, embed_tiles
from pipeline.cli import main


@pytest.fixture(scope="module")
def tile_store(tmp_path_factory):
    from hubcat.synthetic import write_synthetic_mosaic
    from tiling import TileStore, TilingConfig

    root = tmp_path_factory.mktemp("embed-cli")
    source = write_synthetic_mosaic(root / "m.fits", shape=(230, 460), n_sources=20)
    store = TileStore.create(
        root / "tiles", TilingConfig(zooms=(1,), unit_size=1, measure_sources=False)
    )
    store.add_mosaic(source)
    assert len(store.units()) == 2
    return store


def test_embed_in_process_writes_and_resumes(tile_store, model: EmbeddingModel, capsys):
    argv = ["embed", "--store", tile_store.uri, "--in-process", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["units_done"] == 2 and first["units_skipped"] == 0
    assert first["digest"] == model.digest
    assert first["weights_sha256"] == model.weights_sha256

    emb = EmbeddingStore(tile_store, model.digest)
    assert emb.model_info()["digest"] == model.digest
    ref = tile_store.units()[0]
    tile_ids, tiles = tile_store.read_unit(ref.unit_key)
    rec, vectors = emb.read(ref.unit_key)
    assert list(rec.tile_ids) == tile_ids
    np.testing.assert_allclose(vectors, embed_tiles(model, tiles), atol=1e-5)

    assert main(argv) == 0  # second run: nothing left to do
    again = json.loads(capsys.readouterr().out)
    assert again["units_done"] == 0 and again["units_skipped"] == 2


def test_embed_unknown_model_is_a_clear_error(tile_store, capsys):
    assert main(["embed", "--store", tile_store.uri, "--model", "efficientnet_lite00"]) == 1
    err = capsys.readouterr().err
    assert "hubcat embed: error: unknown model 'efficientnet_lite00'" in err
    assert "efficientnet_lite0" in err


def test_embed_missing_store_is_a_clear_error(tmp_path, capsys):
    assert main(["embed", "--store", str(tmp_path / "nothing"), "--in-process"]) == 1
    assert "nothing" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.grid
def test_embed_on_the_grid(tmp_path, model: EmbeddingModel, capsys):
    """The default path: units run on a LocalCluster worker process and are validated."""
    from hubcat.synthetic import write_synthetic_mosaic
    from tiling import TileStore, TilingConfig

    source = write_synthetic_mosaic(tmp_path / "g.fits", shape=(230, 230), n_sources=10)
    store = TileStore.create(tmp_path / "tiles", TilingConfig(zooms=(1,), measure_sources=False))
    store.add_mosaic(source)
    argv = ["embed", "--store", store.uri, "--workers", "1", "--threads", "1", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "grid" and summary["units_done"] == 1
    ids, vectors, _ = EmbeddingStore(store, model.digest).read_all()
    tile_ids, tiles = store.read_unit(store.units()[0].unit_key)
    assert ids == tile_ids
    np.testing.assert_allclose(vectors, embed_tiles(model, tiles), atol=1e-4)


def test_embed_runtime_option_is_recorded(tmp_path, model: EmbeddingModel, capsys):
    """--runtime torch: same digest (fp32), the class recorded with every unit; env restored."""
    import os

    from hubcat.synthetic import write_synthetic_mosaic
    from tiling import TileStore, TilingConfig

    source = write_synthetic_mosaic(tmp_path / "r.fits", shape=(230, 230), n_sources=10)
    store = TileStore.create(tmp_path / "tiles", TilingConfig(zooms=(1,), measure_sources=False))
    store.add_mosaic(source)
    argv = ["embed", "--store", store.uri, "--in-process", "--runtime", "torch", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["numerical_class"] == "torch-fp32"
    assert summary["digest"] == model.digest
    assert "HUBCAT_EMBED_RUNTIME" not in os.environ
    emb = EmbeddingStore(store, model.digest)
    rec, vectors = emb.read(store.units()[0].unit_key)
    assert rec.numerical_class == "torch-fp32"
    _, tiles = store.read_unit(rec.unit_key)
    cos = np.sum(vectors * embed_tiles(model, tiles), axis=1)  # the default: OpenVINO
    assert cos.min() >= 0.99999


def test_embed_precision_the_machine_cannot_run(tile_store, capsys):
    from embeddings import native_precisions

    if "bf16" in native_precisions("openvino"):
        pytest.skip("this CPU runs bf16 natively")
    argv = ["embed", "--store", tile_store.uri, "--runtime", "openvino", "--precision", "bf16"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "cannot run bf16 natively with openvino" in err and "precision='fp32'" in err
