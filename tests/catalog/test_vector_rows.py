"""Reading stored vector rows: memory-mapped local shards, coalesced concurrent S3 ranges.

Tiny shards (a few dozen rows of dimension 8 to 32) keep every test well under a second, apart
from the S3 ones, which start nothing of their own (the session's moto server).
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from catalog import CatalogConfig, CatalogError, CorruptCatalogError, ShardReadError
from catalog._compressed import CompressedIndex, add_part, encode_part, recipe_of, train
from catalog._shards import VectorRows, write_vector_shards
from hubcat.storage import open_object_store

D, SHARD = 8, 16


def unit(n: int, d: int = D, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def segments(store, x: np.ndarray, shard_rows: int = SHARD) -> list[dict]:
    shards = write_vector_shards(store, "segments/000001", x, shard_rows, 0)
    return [{"rows": len(x), "first_row": 0, "vector_shards": shards}]


def test_local_shards_are_memory_mapped_and_gathered_once_per_shard(tmp_path):
    store = open_object_store(tmp_path / "cat")
    x = unit(50)
    segs = segments(store, x)  # shards of 16, 16, 16 and 2 rows
    reads: list[int] = []
    rows = VectorRows(store, segs, D, on_read=reads.append)
    assert rows.memmap
    ids = np.array([40, 3, 3, 17, 49, 0, 18, 40, 31])
    assert np.array_equal(rows.rows(ids), x[ids])
    # one gather per shard touched, each of exactly its distinct rows
    assert reads == [2 * D * 4, 3 * D * 4, 1 * D * 4, 1 * D * 4]
    ranged = VectorRows(store, segs, D, memmap=False)
    assert np.array_equal(ranged.rows(ids), rows.rows(ids))
    # a shard replaced since it was mapped is mapped again
    key = segs[0]["vector_shards"][1]["key"]
    store.put(key, (x[16:32] * 2).tobytes())
    assert np.array_equal(rows.rows(np.array([17])), 2 * x[17:18])
    # a mapped shard cut short is refused by name before a page of it is touched
    path = tmp_path / "cat" / key
    path.write_bytes(path.read_bytes()[: 5 * D * 4])
    with pytest.raises(CorruptCatalogError, match=rf"{key} .*truncated: {5 * D * 4} bytes"):
        rows.rows(np.array([17]))
    path.unlink()
    with pytest.raises(CorruptCatalogError, match=rf"{key} .*missing"):
        rows.rows(np.array([20]))
    assert np.array_equal(rows.rows(np.array([1, 33])), x[[1, 33]])  # the other shards still read
    with pytest.raises(CatalogError, match="gap_rows=-1"):
        VectorRows(store, segs, D, gap_rows=-1)


def _small_index(store, x: np.ndarray, rows: VectorRows) -> CompressedIndex:
    """A PCA16,IVF16,PQ4 index over ``x`` built part by part, as the catalogue builds one."""
    config = CatalogConfig(compressed_dim=16, compressed_pq_m=4, ivf_nlist=16, seed=0)
    recipe = recipe_of(config, len(x), x.shape[1])
    trained = train(x, recipe)
    index = faiss.clone_index(trained)
    for shard in rows.shards:
        lo = int(shard["first_row"])
        part = encode_part(trained, "0" * 64, x[lo : lo + int(shard["rows"])], lo)
        add_part(index, part, shard, "0" * 64, "test")
    return CompressedIndex(index, rows, recipe)


def test_batched_memmap_rerank_gives_the_per_query_exact_top10(tmp_path):
    faiss.omp_set_num_threads(1)
    d, n = 32, 3_000
    x = unit(n, d, seed=1)
    q = unit(40, d, seed=2)
    store = open_object_store(tmp_path / "cat")
    segs = segments(store, x, shard_rows=512)
    reads: list[int] = []
    index = _small_index(store, x, VectorRows(store, segs, d, on_read=reads.append))
    sims, ids = index.search(q, 10)
    # one gather for the whole batch: each shard read once, each distinct candidate once
    cand = index.candidates(q, 50)
    assert len(reads) == len(segs[0]["vector_shards"])
    assert sum(reads) == len(np.unique(cand[cand >= 0])) * d * 4
    # the reference: every query alone, its candidates ranked by the exact inner product
    for i in range(len(q)):
        row = cand[i][cand[i] >= 0]
        s = x[row] @ q[i]
        top = np.argsort(-s, kind="stable")[:10]
        assert np.array_equal(ids[i], row[top])
        np.testing.assert_allclose(sims[i], s[top], rtol=1e-5)
    # the same through range reads, and one query at a time
    ranged = CompressedIndex(index.index, VectorRows(store, segs, d, memmap=False), index.recipe)
    assert np.array_equal(ranged.search(q, 10)[1], ids)
    assert np.array_equal(np.concatenate([index.search(v[None], 10)[1] for v in q]), ids)
    # fewer candidates than k: the rest is -1 / -inf
    few = index.rerank(q[:2], np.array([[5, 7, -1], [-1, -1, -1]]), 4)
    assert list(few[1][0]) == [*sorted([5, 7], key=lambda r: -float(x[r] @ q[0])), -1, -1]
    assert (few[1][1] == -1).all() and np.isneginf(few[0][1]).all()


@pytest.fixture
def s3_rows(s3_server):
    """50 rows of dimension 8 in shards of 16 rows in a bucket, behind a fault proxy."""
    from tests._s3_support import FaultProxy

    bucket = s3_server.create_bucket("hubcat-vector-rows")
    x = unit(50)
    segs = segments(open_object_store(f"{bucket}/cat"), x)
    proxy = FaultProxy(s3_server.host, s3_server.port)
    store = open_object_store(f"{bucket}/cat", endpoint_url=proxy.endpoint_url, max_attempts=2)
    got: list[int] = []

    def count(http_response, parsed, **kwargs):
        if http_response.status_code < 300:
            got.append(int(parsed["ContentLength"]))

    store.client.meta.events.register("after-call.s3.GetObject", count)
    try:
        yield x, segs, store, proxy, got
    finally:
        proxy.stop()


@pytest.mark.s3
def test_s3_rows_are_coalesced_into_one_range_request_per_run(s3_rows):
    x, segs, store, proxy, got = s3_rows
    keys = [s["key"] for s in segs[0]["vector_shards"]]
    row = D * 4
    ids = np.array([10, 11, 12, 14, 20, 12, 16, 17, 40, 47, 49])
    # gap 0: only adjacent rows share a request; nothing unwanted is read
    rows = VectorRows(store, segs, D, gap_rows=0)
    assert not rows.memmap
    assert np.array_equal(rows.rows(ids), x[ids])
    want = [(keys[0], 10 * row, 3 * row), (keys[0], 14 * row, row), (keys[1], 0, 2 * row)]
    want += [(keys[1], 4 * row, row), (keys[2], 8 * row, row), (keys[2], 15 * row, row)]
    want += [(keys[3], row, row)]
    assert rows.read_plan(ids) == want
    sent = sorted((r.path.split("/", 2)[2], r.headers["Range"]) for r in proxy.requests)
    assert sent == sorted((f"cat/{k}", f"bytes={a}-{a + n - 1}") for k, a, n in want)
    assert sorted(got) == sorted(n for _, _, n in want)
    assert sum(got) == len(np.unique(ids)) * row
    # gap 3: rows up to three apart in one shard share a request (one per shard here but the
    # third, whose two rows are six apart)
    proxy.clear()
    got.clear()
    rows = VectorRows(store, segs, D, gap_rows=3)
    assert np.array_equal(rows.rows(ids), x[ids])
    want = [(keys[0], 10 * row, 5 * row), (keys[1], 0, 5 * row), (keys[2], 8 * row, row)]
    want += [(keys[2], 15 * row, row), (keys[3], row, row)]
    assert rows.read_plan(ids) == want
    assert len(proxy.requests) == len(want) == len(got)
    assert sum(got) == sum(n for _, _, n in want) == 13 * row


@pytest.mark.s3
def test_s3_read_failures_name_the_shard(s3_rows):
    x, segs, store, proxy, _ = s3_rows
    keys = [s["key"] for s in segs[0]["vector_shards"]]
    rows = VectorRows(store, segs, D)
    ids = np.array([1, 17, 33, 48])
    proxy.add("error500", keys[2], times=10)  # one of four concurrent requests fails
    with pytest.raises(ShardReadError, match=keys[2]):
        rows.rows(ids)
    proxy.clear()
    assert np.array_equal(rows.rows(ids), x[ids])
    store.put(keys[1], x[16:20].tobytes())  # cut short: 4 of its 16 rows
    with pytest.raises(CorruptCatalogError, match=rf"{keys[1]} .*truncated"):
        rows.rows(np.array([30]))
    store.delete(keys[3])
    with pytest.raises(CorruptCatalogError, match=rf"{keys[3]} .*missing"):
        rows.rows(np.array([49]))
