"""The compressed ``ivfpq_rerank`` index: sharded vectors, Dask build, lazy open from S3.

20,000 synthetic clustered unit vectors of dimension 128 in shards of 4,096 rows keep every build
to seconds; the recipe is scaled down with them (PCA to 64-d, 16-byte codes).
"""

from __future__ import annotations

import hashlib
import json

import faiss
import numpy as np
import pandas as pd
import pytest

from catalog import CatalogConfig, Catalogue, CorruptCatalogError, ShardReadError
from catalog.provenance import verify_catalogue
from hubcat.storage import open_object_store

N, D, SHARD = 20_000, 128, 4_096
MODEL = {"name": "synthetic", "weights_sha256": "2" * 64, "digest": "3" * 64, "dim": D}


def clustered(n: int, *, seed: int, centres: int = 200, latent: int = 16, d: int = D) -> np.ndarray:
    """Unit vectors like real embeddings: ``centres`` fields, spread in a ``latent``-d subspace.

    The centres and the subspace are fixed; ``seed`` draws the points. Real embeddings hold
    most of their variance in a few dozen components (``benchmarks/search.py``).
    """
    fixed = np.random.default_rng(7)
    base = fixed.normal(size=(centres, d)).astype(np.float32)
    basis = np.linalg.qr(fixed.normal(size=(d, latent)))[0].T.astype(np.float32)
    rng = np.random.default_rng(seed)
    x = base[rng.integers(0, centres, n)]
    x += 2.0 * rng.normal(size=(n, latent)).astype(np.float32) @ basis
    x += 0.1 * rng.normal(size=(n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def table(n: int, start: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(start)
    return pd.DataFrame(
        {
            "tile_id": [f"t{i:06d}" for i in range(start, start + n)],
            "source": "synthetic",
            "source_sha256": "0" * 64,
            "hdu": 0,
            "zoom": 1 + np.arange(start, start + n) % 2,
            "x0": np.arange(n) * 224,
            "y0": 0,
            "ra": rng.uniform(0, 360, n),
            "dec": rng.uniform(-60, 60, n),
            "tile_sha256": "1" * 64,
            "tiling_digest": "4" * 64,
        }
    )


def config(workers: int) -> CatalogConfig:
    return CatalogConfig(
        exact_max=1_000,
        compressed_min=1_000,
        shard_rows=SHARD,
        compressed_dim=64,
        compressed_pq_m=16,
        build_workers=workers,
        train_size=N,
    )


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    """FAISS threads spin on a shared two-core machine; one thread keeps training in seconds."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    return clustered(N, seed=0), clustered(50, seed=1)


@pytest.fixture(scope="module")
def single(tmp_path_factory, data):
    """The same catalogue built in this process (``build_workers=1``)."""
    faiss.omp_set_num_threads(1)
    out = tmp_path_factory.mktemp("single") / "cat"
    return Catalogue.from_vectors(out, table(N), data[0], MODEL, config=config(1))


def _top10(cat: Catalogue, queries: np.ndarray) -> np.ndarray:
    return np.array([cat._search(q, 10, None)[1] for q in queries])


def _exact(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    return faiss.knn(q, x, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]


def test_two_dask_workers_build_the_same_index_as_one_process(tmp_path, data, single):
    from distributed import Client, LocalCluster

    x, q = data
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        assert len(client.scheduler_info()["workers"]) == 2
        seen = []
        cat = Catalogue.from_vectors(
            tmp_path / "cat",
            table(N),
            x,
            MODEL,
            config=config(2),
            client=client,
            progress=lambda done, total: seen.append((done, total)),
        )
    entry = cat.manifest["index"]
    shards = cat.manifest["segments"][0]["vector_shards"]
    assert entry["type"] == "ivfpq_rerank" and len(shards) == 5 == len(entry["parts"])
    assert seen[-1] == (5, 5)
    assert all(s["bytes"] <= SHARD * D * 4 for s in shards)
    assert entry["faiss"] == "PCA64,IVF512,PQ16" and entry["recipe"]["rerank_candidates"] == 50
    assert entry["trained_sha256"] == single.manifest["index"]["trained_sha256"]
    assert [p["sha256"] for p in entry["parts"]] == [
        p["sha256"] for p in single.manifest["index"]["parts"]
    ]
    fresh = Catalogue.open(tmp_path / "cat")
    got = _top10(fresh, q)
    assert np.array_equal(got, _top10(single, q))
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, _exact(x, q), strict=True)])
    assert recall >= 0.95, recall
    assert entry["recall_at_10"] >= 0.95 and entry["recall_probes"] == 100
    assert entry["resident_bytes_per_vector"] <= 128
    assert fresh._index.resident_bytes() == entry["resident_bytes"]


def test_a_new_version_encodes_only_its_new_vectors(tmp_path, data):
    x, q = data
    out = tmp_path / "cat"
    v1 = Catalogue.from_vectors(out, table(N), x, MODEL, config=config(1))
    more = clustered(3_000, seed=2)
    v2 = Catalogue.from_vectors(out, table(3_000, start=N), more, MODEL)
    e1, e2 = v1.manifest["index"], v2.manifest["index"]
    assert e2["how"] == "extended" and e2["encoded_shards"] == 1
    assert e2["trained_key"] == e1["trained_key"] and e2["parts"][:5] == e1["parts"]
    assert len(v2) == N + 3_000 and v2._index.ntotal == N + 3_000
    tid = "t020005"
    assert v2.similar(tid, k=5)["tile_id"][0] == tid
    both = np.concatenate([x, more])
    got = _top10(Catalogue.open(out), q)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, _exact(both, q), strict=True)])
    assert recall >= 0.95, recall
    # filters: a small selection is ranked exactly, a large one through the codes' selector
    zoom2 = np.arange(N + 3_000) % 2 == 1
    res = v2.similar(more[0], k=5, zoom=2)
    rows = np.flatnonzero(zoom2)
    assert list(res["tile_id"]) == [f"t{rows[i]:06d}" for i in _exact(both[rows], more[:1])[0][:5]]
    _, ids = v2._index.search(q, 10, allowed=zoom2)
    assert (ids >= 0).all() and zoom2[ids].all()
    truth = rows[_exact(both[rows], q)]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)]) >= 0.9


def _copy(src, dst) -> None:
    import shutil

    shutil.copytree(src, dst)


def test_damaged_shards_and_parts_are_named(tmp_path, single):
    root = tmp_path / "cat"
    _copy(single.store.uri.removeprefix("file://"), root)
    manifest = json.loads((root / "manifest.json").read_text())
    shard = manifest["segments"][0]["vector_shards"][2]
    path = root / shard["key"]
    # truncated shard: the query that needs its rows names it, and so does verify
    path.write_bytes(path.read_bytes()[: SHARD * D * 2])
    cat = Catalogue.open(root)
    with pytest.raises(CorruptCatalogError, match=rf"{shard['key']}.*truncated"):
        for v in np.asarray(single.vectors()[shard["first_row"] + SHARD - 10 :][:5]):
            cat._index.search(v[None], 10)
    report = verify_catalogue(Catalogue.open(root))
    assert not report.ok and any(f.subject == shard["key"] for f in report.failures)
    # missing shard
    path.unlink()
    rows = cat._index.rows
    with pytest.raises(CorruptCatalogError, match=rf"{shard['key']} .*missing"):
        rows.rows(np.array([shard["first_row"]]))
    # a part encoded with another codebook (its manifest entry made to match): refused by name
    other = Catalogue.from_vectors(  # another codebook (trained on other vectors)
        tmp_path / "other", table(2 * SHARD), clustered(2 * SHARD, seed=5), MODEL, config=config(1)
    )
    part = manifest["index"]["parts"][1]
    foreign = other.store.get(other.manifest["index"]["parts"][1]["key"])
    (root / part["key"]).write_bytes(foreign)
    part["sha256"] = hashlib.sha256(foreign).hexdigest()
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptCatalogError, match=rf"{part['key']}.*codebook"):
        Catalogue.open(root)
    # a manifest naming a part that is not there
    (root / part["key"]).unlink()
    with pytest.raises(CorruptCatalogError, match=rf"{part['key']} .*missing"):
        Catalogue.open(root)
    report = verify_catalogue(_bare(root))
    assert any(f.subject == part["key"] for f in report.failures)


def _bare(root) -> Catalogue:
    """The catalogue at ``root`` without loading its (damaged) index, for verify."""
    from catalog._manifest import read_manifest

    store = open_object_store(root)
    return Catalogue(store, read_manifest(store, None), _load_index=False)


@pytest.mark.s3
def test_open_from_s3_reads_only_the_index_metadata_and_reranked_rows(s3_server):
    """At the real dimension (1280), the first query reads under 5 % of the catalogue's bytes."""
    from tests._s3_support import FaultProxy, record_gets

    d, n = 1280, 8_192
    model = {**MODEL, "dim": d}
    x = clustered(n, seed=0, d=d)
    bucket = s3_server.create_bucket("hubcat-compressed")
    uri = f"{bucket}/cat"
    Catalogue.from_vectors(uri, table(n), x, model, config=config(1))
    plain = open_object_store(uri)
    total = sum(plain.size(k) for k in plain.list())
    proxy = FaultProxy(s3_server.host, s3_server.port)
    try:
        store = open_object_store(uri, endpoint_url=proxy.endpoint_url, max_attempts=2)
        got = record_gets(store)
        cat = Catalogue.open(store)
        assert not any("/vectors" in k for k, _, _ in got)  # opening reads no vector
        res = cat.similar(x[123], k=10)
        assert len(res) == 10 and res["tile_id"][0] == "t000123"
        read = sum(n for _, n, _ in got)
        assert read < 0.05 * total, (read, total, sorted(got, key=lambda g: -g[1])[:6])
        vec = [(k, n, r) for k, n, r in got if "/vectors" in k]
        assert vec and all(r is not None for _, _, r in vec)  # ranges, never a whole shard
        assert sum(n for _, n, _ in vec) <= 50 * d * 4  # at most the 50 re-ranked rows
        assert not any(k.startswith("cat/provenance/") for k, _, _ in got)
        # a tile query reads its own row once and the re-ranked ones, not every vector
        got.clear()
        assert cat.similar("t000321", k=10)["tile_id"][0] == "t000321"
        assert 0 < sum(n for k, n, _ in got if "/vectors" in k) <= 51 * d * 4
        # an S3 failure mid-query: the error names the shard, and the next query works again
        shard = cat.manifest["segments"][0]["vector_shards"][0]["key"]
        proxy.add("error500", shard, times=50)
        with pytest.raises(ShardReadError, match=shard):
            cat.similar(x[5], k=10)
        proxy.clear()
        assert cat.similar(x[5], k=10)["tile_id"][0] == "t000005"
    finally:
        proxy.stop()
