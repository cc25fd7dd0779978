"""The vector index kinds, the size threshold, and catalogues on S3."""

from __future__ import annotations

import numpy as np
import pytest

from catalog import CatalogConfig, CatalogError, Catalogue
from catalog._index import (
    build_index,
    deserialize_index,
    exact_search,
    normalise,
    search_index,
    serialize_index,
)


def clustered(n: int, d: int, *, seed: int = 0, clusters: int = 50) -> np.ndarray:
    """Unit vectors around ``clusters`` random centres (embeddings are clustered, not uniform)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, d))
    return normalise(x)


@pytest.fixture(scope="module")
def data():
    x = clustered(2000, 32)
    rng = np.random.default_rng(1)
    q = normalise(x[rng.choice(len(x), 100, replace=False)] + 0.05 * rng.normal(size=(100, 32)))
    _, truth = exact_search(x, q, 10)
    return x, q, truth


@pytest.mark.parametrize(
    ("kind", "config"),
    [
        ("flat", CatalogConfig()),
        ("ivfflat", CatalogConfig(ivf_nlist=16, ivf_nprobe=4)),
        ("hnsw", CatalogConfig(hnsw_m=16, hnsw_ef_construction=40, hnsw_ef_search=128)),
        ("ivfpq", CatalogConfig(ivf_nlist=16, ivf_nprobe=4, pq_m=8, refine_factor=8)),
    ],
)
def test_index_kinds_recall_and_round_trip(data, kind, config):
    x, q, truth = data
    index = build_index(x, config, kind)
    sims, ids = search_index(index, q, 10, config)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)])
    assert recall >= (1.0 if kind == "flat" else 0.9), recall
    again = deserialize_index(serialize_index(index))
    sims2, ids2 = search_index(again, q, 10, config)
    assert np.array_equal(ids, ids2) and np.array_equal(sims, sims2)
    assert np.all(np.diff(sims, axis=1) <= 1e-6)


def test_config_chooses_by_size_and_validates():
    config = CatalogConfig(exact_max=100)
    assert config.index_kind(100) == "flat" and config.index_kind(101) == "ivfflat"
    assert CatalogConfig(approximate="ivfpq").index_kind(10**6) == "ivfpq"
    assert CatalogConfig(approximate="hnsw").index_kind(10**6) == "hnsw"
    assert CatalogConfig().digest != config.digest
    with pytest.raises(CatalogError, match="approximate"):
        CatalogConfig(approximate="lsh")
    with pytest.raises(CatalogError, match="positive integer"):
        CatalogConfig(hnsw_m=0)
    with pytest.raises(CatalogError, match="needs at least"):
        build_index(clustered(100, 16), CatalogConfig(ivf_nlist=64, pq_m=4), "ivfpq")
    with pytest.raises(CatalogError, match="needs at least"):
        build_index(clustered(100, 16), CatalogConfig(), "ivfflat")
    with pytest.raises(CatalogError, match="NaN"):
        normalise(np.array([[np.nan, 1.0]]))
    with pytest.raises(CatalogError, match="zero norm"):
        normalise(np.zeros((2, 3)))


def test_catalogue_above_threshold_uses_hnsw(tmp_path, stores):
    config = CatalogConfig(exact_max=4, approximate="hnsw", hnsw_ef_search=32)
    cat = Catalogue.build(tmp_path / "cat", *stores["main"], config=config)
    assert cat.manifest["index"]["type"] == "hnsw"
    assert cat.manifest["index"]["params"]["efSearch"] == 32
    assert cat.manifest["config"]["exact_max"] == 4
    cat2 = Catalogue.build(tmp_path / "cat", *stores["ngc"])
    assert cat2.manifest["index"]["type"] == "hnsw" and cat2.manifest["index"]["how"] == "extended"
    fresh = Catalogue.open(tmp_path / "cat")
    for tid in fresh.metadata()["tile_id"]:
        a, b = cat2.similar(tid, k=4), fresh.similar(tid, k=4)
        assert a["tile_id"][0] == tid
        assert list(a["tile_id"]) == list(b["tile_id"])
        assert np.array_equal(np.asarray(a["similarity"]), np.asarray(b["similarity"]))


@pytest.mark.s3
def test_catalogue_on_s3(s3_server, stores):
    bucket = s3_server.create_bucket("hubcat-catalogues")
    uri = f"{bucket}/demo/cat"
    built = Catalogue.build(uri, *stores["main"])
    Catalogue.build(uri, *stores["ngc"])
    cat = Catalogue.open(uri)
    assert cat.uri == uri and cat.version == 2 and len(cat) > len(built)
    tid = cat.metadata()["tile_id"][0]
    res = cat.similar(tid, k=3)
    assert res["tile_id"][0] == tid
    assert Catalogue.open(uri, version=1).manifest["counts"]["tiles"] == len(built)
    keys = list(cat.store.list())
    assert "manifest.json" in keys and any(k.startswith("provenance/") for k in keys)
