"""Encoding vector shards into index parts, in parallel on Dask workers.

Each task reads one vector shard from the catalogue's store (the worker reads it itself: no vector
travels through Dask), checks its sha256, encodes it with the trained index, writes the part back
to the store and returns only the part's key, size and sha256, plus the exact top-k of the
recall probes within that shard (so the build measures recall against an exact search without
any one process holding every vector). The driver merges the inverted lists of every part.

A :class:`distributed.LocalCluster` of ``CatalogConfig.build_workers`` worker processes is started
when no client is given; ``build_workers=1`` without a client runs in this process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import faiss
import numpy as np

from catalog._compressed import encode_part
from catalog.errors import CorruptCatalogError
from hubcat.errors import StoreNotFoundError
from hubcat.storage import ObjectStore

__all__ = ["build_compressed_index", "encode_shards", "merge_truth"]

_TRAINED: dict[str, faiss.Index] = {}  # per worker process: trained index by sha256


def _trained(store: ObjectStore, key: str, sha256: str) -> faiss.Index:
    if sha256 not in _TRAINED:
        data = store.get(key)
        if hashlib.sha256(data).hexdigest() != sha256:
            msg = f"trained index {key} of {store.uri} does not match its sha256"
            raise CorruptCatalogError(msg)
        _TRAINED.clear()
        _TRAINED[sha256] = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    return _TRAINED[sha256]


def _shard_task(
    store: ObjectStore,
    shard: dict,
    dim: int,
    trained_key: str,
    trained_sha256: str,
    part_key: str | None,
    probes: np.ndarray | None,
    k: int,
) -> dict:
    """Encode one shard (when ``part_key``) and/or find the probes' exact top-k in it."""
    faiss.omp_set_num_threads(1)
    try:
        data = store.get(shard["key"])
    except StoreNotFoundError:
        msg = f"vector shard {shard['key']} of {store.uri} is missing; it cannot be encoded"
        raise CorruptCatalogError(msg) from None
    if hashlib.sha256(data).hexdigest() != shard["sha256"]:
        msg = f"vector shard {shard['key']} of {store.uri} does not match its sha256"
        raise CorruptCatalogError(msg)
    x = np.frombuffer(data, dtype="<f4").reshape(-1, dim)
    out: dict = {"shard": shard["key"]}
    if part_key is not None:
        part = encode_part(
            _trained(store, trained_key, trained_sha256), trained_sha256, x, int(shard["first_row"])
        )
        store.put(part_key, part)
        out["part"] = {
            "key": part_key,
            "shard": shard["key"],
            "first_row": int(shard["first_row"]),
            "rows": len(x),
            "bytes": len(part),
            "sha256": hashlib.sha256(part).hexdigest(),
        }
    if probes is not None and len(probes):
        kk = min(k, len(x))
        sims, ids = faiss.knn(
            probes, np.ascontiguousarray(x), kk, metric=faiss.METRIC_INNER_PRODUCT
        )
        out["truth"] = (sims.astype(np.float32), ids.astype(np.int64) + int(shard["first_row"]))
    return out


def merge_truth(results: list[dict], n_probes: int, k: int) -> np.ndarray:
    """The exact top-``k`` rows of each probe from every shard's own top-``k``."""
    parts = [r["truth"] for r in results if "truth" in r]
    if not parts:
        return np.zeros((n_probes, 0), dtype=np.int64)
    sims = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, axis=1)


def encode_shards(
    store: ObjectStore,
    jobs: list[tuple[dict, str | None]],
    dim: int,
    trained_key: str,
    trained_sha256: str,
    *,
    probes: np.ndarray | None = None,
    k: int = 10,
    client: object | None = None,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Run one task per ``(shard, part_key)`` job; return their results in job order.

    Parameters
    ----------
    store : ObjectStore
        The catalogue's root (picklable; the workers read and write it).
    jobs : list of (dict, str or None)
        A vector shard entry and the key of the part to write (``None``: probes only).
    dim : int
    trained_key, trained_sha256 : str
        The stored trained index.
    probes : numpy.ndarray, optional
        Recall probes (unit vectors) whose exact top-``k`` each task returns.
    client : distributed.Client, optional
        Where to run (default: a LocalCluster of ``workers`` processes; in this process when
        ``workers`` is 1).
    workers : int
    progress : callable, optional
        ``progress(done, total)`` after every task.

    Returns
    -------
    list of dict
    """
    args = [(store, s, dim, trained_key, trained_sha256, key, probes, k) for s, key in jobs]
    total = len(args)
    if client is None and workers <= 1:
        out = []
        for i, a in enumerate(args):
            out.append(_shard_task(*a))
            if progress is not None:
                progress(i + 1, total)
        return out
    cluster = None
    if client is None:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    try:
        from distributed import as_completed

        futures = [client.submit(_shard_task, *a, pure=False) for a in args]
        index = {f.key: i for i, f in enumerate(futures)}
        out: list = [None] * total
        for done, fut in enumerate(as_completed(futures), start=1):
            out[index[fut.key]] = fut.result()
            if progress is not None:
                progress(done, total)
        return out
    finally:
        if cluster is not None:
            client.close()
            cluster.close()


def build_compressed_index(
    store: ObjectStore,
    manifest: dict,
    previous: dict | None,
    config,
    version: int,
    *,
    client: object | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict, object]:
    """Train (or reuse), encode on Dask, merge, and measure the compressed index of a version.

    Parameters
    ----------
    store : ObjectStore
    manifest : dict
        The version's manifest so far (``segments``, ``counts``, ``model``).
    previous : dict, optional
        The previous version's ``index`` entry: when it is an ``ivfpq_rerank`` index its trained
        index and parts are reused and only the shards it lacks are encoded.
    config : CatalogConfig
    version : int
    client : distributed.Client, optional
    progress : callable, optional

    Returns
    -------
    (dict, CompressedIndex)
        The manifest's ``index`` entry (recipe, parts, measured recall and memory) and the index.
    """
    import time

    from catalog._compressed import KIND, load_index, recipe_of, train
    from catalog._index import normalise
    from catalog._shards import VectorRows

    dim = int(manifest["model"]["dim"])
    n = int(manifest["counts"]["tiles"])
    where = f"catalogue {store.uri}"
    reader = VectorRows(store, manifest["segments"], dim)
    prefix = f"versions/{version:06d}/index"
    rng = np.random.default_rng(config.seed)
    t0 = time.perf_counter()
    if previous is not None and previous.get("type") == KIND:
        recipe = dict(previous["recipe"])
        trained_key, trained_sha = previous["trained_key"], previous["trained_sha256"]
        trained_bytes = int(previous.get("trained_bytes", 0))
        parts = list(previous["parts"])
        how = "extended"
    else:
        recipe = recipe_of(config, n, dim)
        take = min(n, int(config.train_size))
        rows = np.sort(rng.choice(n, size=take, replace=False)) if take < n else np.arange(n)
        trained = train(normalise(reader.rows(rows), what=f"{where} training sample"), recipe)
        blob = faiss.serialize_index(trained).tobytes()
        trained_key, trained_sha = f"{prefix}/trained.faiss", hashlib.sha256(blob).hexdigest()
        trained_bytes = len(blob)
        store.put(trained_key, blob)
        parts = []
        how = "built"
    train_seconds = time.perf_counter() - t0
    have = {p["shard"] for p in parts}
    n_probes = min(int(config.recall_probes), n)
    probe_rows = np.sort(rng.choice(n, size=n_probes, replace=False)) if n_probes else None
    probes = normalise(reader.rows(probe_rows)) if n_probes else None
    jobs = []
    for i, shard in enumerate(reader.shards):
        key = None if shard["key"] in have else f"{prefix}/part-{i:05d}.npz"
        if key is not None or probes is not None:
            jobs.append((shard, key))
    t0 = time.perf_counter()
    results = encode_shards(
        store,
        jobs,
        dim,
        trained_key,
        trained_sha,
        probes=probes,
        k=10,
        client=client,
        workers=int(config.build_workers),
        progress=progress,
    )
    encode_seconds = time.perf_counter() - t0
    parts = sorted(
        parts + [r["part"] for r in results if "part" in r], key=lambda p: p["first_row"]
    )
    entry = {
        "type": KIND,
        "metric": "inner_product",
        "ntotal": n,
        "dim": dim,
        "faiss": recipe["faiss"],
        "recipe": recipe,
        "params": recipe,
        "trained_key": trained_key,
        "trained_sha256": trained_sha,
        "trained_bytes": trained_bytes,
        "parts": parts,
        "how": how,
        "encoded_shards": sum("part" in r for r in results),
        "build_seconds": {"train": round(train_seconds, 3), "encode": round(encode_seconds, 3)},
        "workers": "client" if client is not None else int(config.build_workers),
    }
    index = load_index(store, entry, manifest["segments"], dim, where=where)
    entry["resident_bytes"] = index.resident_bytes()
    entry["resident_bytes_per_vector"] = round(index.resident_bytes() / max(n, 1), 2)
    if probes is not None:
        truth = merge_truth(results, n_probes, 10)
        _, found = index.search(probes, 10)
        kk = truth.shape[1]
        hits = [len(set(a[:kk]) & set(b)) / max(kk, 1) for a, b in zip(found, truth, strict=True)]
        entry["recall_at_10"] = round(float(np.mean(hits)), 4)
        entry["recall_probes"] = n_probes
        entry["recall_against"] = "exact inner-product search over every stored vector"
    return entry, index
