"""Search stage, archive scale: the compressed ``ivfpq_rerank`` catalogue index (run by
:mod:`benchmarks.search`).

Figures (baselines measured in the same run, on the synthetic vectors of
:func:`benchmarks.search.synthetic_vectors`, dimension 1280):

- resident bytes per vector of the index (codes, ids, centroids, codebooks, PCA) against the raw
  float32 vector (goal <= 128 B);
- recall@10 against exact inner-product search (goal >= 0.95) and queries/s against exact
  search's queries/s on the same batch of queries, same threads, median of 3 (goal >= 10x at
  10^6); exact search is :func:`catalog._index.exact_search` over every vector in memory, the
  compressed queries re-rank from the memory-mapped vector shards of a local catalogue folder;
- index encode time on 2 Dask workers against 1 (goal >= 1.7x): the catalogue is built once
  (on 2 workers; its whole build time and the driver's training time are in the note), then
  every vector shard is encoded again with the same trained index on LocalClusters of 1, 2, 1
  and 2 workers (``HUBCAT_BENCH_ENCODE_ORDER``), the medians compared; cluster start-up is not
  counted. Run the benchmark under ``nice`` as a whole, so workers and driver share one
  priority;
- opening a catalogue on a loopback S3 server (moto) and answering its first query, against
  opening the same catalogue in a local folder; and the bytes that first S3 query read (counted
  at the boto3 client, ``after-call`` events of every GetObject) against the catalogue's bytes
  (goal < 5 %).

Sizes: ``--quick`` 2x10^4 vectors (a few minutes); the full run 10^6
(``HUBCAT_BENCH_COMPRESSED_SIZES``, comma-separated, overrides).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks._common import Figure, cpu_threads

STAGE = "search"
K = 10


def _progress(text: str) -> None:
    print(f"  [search/compressed] {text}", file=sys.stderr, flush=True)


def _table(n: int):
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "tile_id": [f"t{i:08d}" for i in range(n)],
            "source": "synthetic",
            "source_sha256": "0" * 64,
            "hdu": 0,
            "zoom": 1,
            "x0": (np.arange(n) % 4096) * 224,
            "y0": (np.arange(n) // 4096) * 224,
            "ra": rng.uniform(0, 360, n),
            "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
            "tile_sha256": "1" * 64,
            "tiling_digest": "4" * 64,
        }
    )


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth, strict=True)]))


def _label(n: int) -> str:
    return f"1e{round(np.log10(n))}" if n in (10**4, 10**5, 10**6, 10**7) else f"{n:.0e}"


def _median_time(fn, repeats: int) -> tuple[float, list[float], object]:
    """Median and every wall time of ``repeats`` calls of ``fn``, and its last result."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times, out


def _cluster(workers: int):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    return cluster, Client(cluster)


def _encode_times(cat, order: tuple[int, ...]) -> tuple[dict[int, list[float]], dict]:
    """Encode every vector shard of ``cat`` again on LocalClusters of ``order`` workers.

    The same shards and trained index each time (parts written under a scratch prefix and
    deleted); the cluster start-up is not timed. Alternating the worker counts (1, 2, 1, 2)
    spreads the drift of a shared machine over both. Also returns, per worker count, the CPU
    seconds the workers spent divided by the wall time (the cores they actually got).
    """
    from catalog._encode import encode_shards
    from catalog._shards import segment_shards

    entry = cat.manifest["index"]
    shards = [s for seg in cat.manifest["segments"] for s in segment_shards(seg)]
    dim = int(cat.manifest["model"]["dim"])
    out: dict[int, list[float]] = {}
    cores: dict[int, list[float]] = {}
    for run, workers in enumerate(order):
        jobs = [(s, f"bench-encode/{run}/part-{i:05d}.npz") for i, s in enumerate(shards)]
        cluster, client = _cluster(workers)
        try:
            cpu0 = client.run(time.process_time)  # every worker up before the clock starts
            t0 = time.perf_counter()
            encode_shards(
                cat.store, jobs, dim, entry["trained_key"], entry["trained_sha256"], client=client
            )
            seconds = time.perf_counter() - t0
            cpu = sum(t - cpu0[w] for w, t in client.run(time.process_time).items())
        finally:
            client.close()
            cluster.close()
        for _, key in jobs:
            cat.store.delete(key)
        out.setdefault(workers, []).append(seconds)
        cores.setdefault(workers, []).append(cpu / seconds)
        _progress(
            f"encode run {run + 1}/{len(order)}: {workers} worker(s) {seconds:.1f} s, "
            f"{cpu / seconds:.2f} cores busy"
        )
    return out, cores


def compressed_figures(
    n: int, n_queries: int, *, train_size: int = 100_000, repeats: int = 3
) -> list[Figure]:
    """Every compressed-index figure at ``n`` vectors (module docstring)."""
    import faiss

    from benchmarks.search import DIM, synthetic_vectors
    from catalog import CatalogConfig, Catalogue
    from catalog._index import exact_search

    threads = cpu_threads()
    faiss.omp_set_num_threads(threads)
    label = _label(n)
    t0 = time.perf_counter()
    x = synthetic_vectors(n, seed=0)
    q = synthetic_vectors(n_queries, seed=1)
    generate = time.perf_counter() - t0
    exact_s, exact_runs, (_, truth) = _median_time(partial(exact_search, x, q, K), repeats)
    exact_qps = n_queries / exact_s
    _progress(f"{n} vectors generated in {generate:.0f} s; exact search {exact_qps:.1f} q/s")
    model = {"name": "synthetic", "weights_sha256": "2" * 64, "digest": "3" * 64, "dim": DIM}
    shard_rows = max(4096, n // 16)
    config = CatalogConfig(
        exact_max=1,
        compressed_min=1,
        shard_rows=shard_rows,
        recall_probes=100,
        train_size=train_size,
    )
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="hubcat-bench-compressed-") as tmp:
        root = Path(tmp) / "cat"
        faiss.omp_set_num_threads(1)  # the driver trains single-threaded
        cluster, client = _cluster(2)
        try:
            t0 = time.perf_counter()
            built = Catalogue.from_vectors(root, _table(n), x, model, config=config, client=client)
            whole = time.perf_counter() - t0
        finally:
            client.close()
            cluster.close()
        steps = built.manifest["index"]["build_seconds"]
        _progress(f"catalogue built on 2 workers in {whole:.0f} s: {steps}")
        order = tuple(
            int(w) for w in os.environ.get("HUBCAT_BENCH_ENCODE_ORDER", "1,2,1,2").split(",")
        )
        encode, cores = _encode_times(built, order)
        del built
        faiss.omp_set_num_threads(threads)
        cat = Catalogue.open(root)
        entry = cat.manifest["index"]
        index = cat._index
        index.search(q[:10], K)  # warm-up
        search_s, search_runs, (_, found) = _median_time(partial(index.search, q, K), repeats)
        qps = n_queries / search_s
        recall = _recall(found, truth)
        per_vector = index.resident_bytes() / n
        del x, cat, index
        e1, e2 = float(np.median(encode[1])), float(np.median(encode[2]))
        figures += [
            Figure(
                STAGE,
                f"ivfpq_rerank bytes/vector @{label}",
                per_vector,
                "B",
                "raw float32",
                DIM * 4.0,
                goal="<= 128",
                note=f"{entry['faiss']}, resident (codes {entry['recipe']['pq_m']} B + id 8 B + shared)",
            ),
            Figure(
                STAGE,
                f"ivfpq_rerank recall@10 @{label}",
                recall,
                "",
                "exact",
                1.0,
                goal=">= 0.95",
                note=(
                    f"nprobe {entry['recipe']['nprobe']}, {entry['recipe']['rerank_candidates']} "
                    f"candidates re-ranked from the stored vectors; manifest recall_at_10 "
                    f"{entry.get('recall_at_10')} on {entry.get('recall_probes')} catalogue probes"
                ),
            ),
            Figure(
                STAGE,
                f"ivfpq_rerank queries/s @{label}",
                qps,
                "q/s",
                "exact",
                exact_qps,
                goal=">= 10" if n >= 10**6 else "",
                note=(
                    f"one batch of {n_queries} queries, {threads} threads, median of {repeats} "
                    f"(compressed {_fmt(search_runs)} s; exact {_fmt(exact_runs)} s); exact: "
                    "catalog._index.exact_search over every vector in memory (FAISS's BLAS inner "
                    "product, the flat kind's search); re-rank rows gathered from memory-mapped "
                    "local shards"
                ),
            ),
            Figure(
                STAGE,
                f"ivfpq_rerank encode time 2 vs 1 Dask workers @{label}",
                e2,
                "s",
                "1 worker",
                e1,
                goal="ratio <= 1/1.7",
                note=(
                    f"{len(entry['parts'])} shards of {shard_rows} rows, the same trained index, "
                    f"runs in the order {','.join(map(str, order))} (1 worker: "
                    f"{_fmt(encode[1])} s; 2 workers: {_fmt(encode[2])} s), medians; speed-up "
                    f"x{e1 / e2:.2f}; cores the workers got (CPU s / wall s): 1 worker "
                    f"{_fmt(cores[1])}, 2 workers {_fmt(cores[2])}; cluster start-up not timed. Train on the driver "
                    f"{steps['train']:.0f} s; the whole catalogue build on 2 workers (vectors, "
                    f"metadata, provenance, train, encode, recall probes) {whole:.0f} s"
                ),
            ),
        ]
        figures += _s3_figures(root, q[0], label)
    return figures


def _fmt(times: list[float]) -> str:
    return "/".join(f"{t:.2f}" if t < 10 else f"{t:.0f}" for t in times)


def _s3_figures(local_root: Path, query: np.ndarray, label: str) -> list[Figure]:
    """Open + first query on loopback S3 against local; bytes read against the catalogue's."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        return [Figure(STAGE, "ivfpq_rerank S3 first query", float("nan"), "", note="no moto")]
    from catalog import Catalogue
    from hubcat.storage import open_object_store

    # werkzeug logs every request of moto's server (~300 lines per catalogue upload)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        uri = "s3://hubcat-bench/cat"
        dst = open_object_store(uri, endpoint_url=endpoint, region="us-east-1")
        dst.client.create_bucket(Bucket="hubcat-bench")
        src = open_object_store(local_root)
        for key in src.list():
            dst.put(key, src.get(key))
        total = sum(dst.size(k) for k in dst.list())

        def first_local() -> float:
            t0 = time.perf_counter()
            Catalogue.open(local_root).similar(query, k=K)
            return time.perf_counter() - t0

        def first_s3() -> tuple[float, int]:
            store = open_object_store(uri, endpoint_url=endpoint, region="us-east-1")
            read: list[tuple[str, int]] = []

            def remember(params, context, **kwargs):
                context["hubcat_key"] = params["Key"]

            def count(http_response, parsed, context=None, **kwargs):
                if http_response.status_code < 300:
                    read.append((context["hubcat_key"], int(parsed["ContentLength"])))

            store.client.meta.events.register("before-parameter-build.s3.GetObject", remember)
            store.client.meta.events.register("after-call.s3.GetObject", count)
            t0 = time.perf_counter()
            Catalogue.open(store).similar(query, k=K)
            return time.perf_counter() - t0, read

        local = float(np.median([first_local() for _ in range(3)]))
        runs = [first_s3() for _ in range(3)]
        s3 = float(np.median([r[0] for r in runs]))
        got = runs[-1][1]
        read = sum(n for _, n in got)
        vec = [n for key, n in got if "/vectors" in key]
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return [
        Figure(
            STAGE,
            f"ivfpq_rerank open + first query on S3 @{label}",
            s3,
            "s",
            "local folder",
            local,
            note="loopback moto server; median of 3 fresh opens each",
        ),
        Figure(
            STAGE,
            f"ivfpq_rerank first S3 query bytes read @{label}",
            float(read),
            "B",
            "catalogue bytes",
            float(total),
            goal="ratio < 0.05",
            note=(
                f"counted at the boto3 client (after-call GetObject ContentLength): {len(got)} "
                f"GETs; of them {len(vec)} range requests of vector rows, {sum(vec)} B "
                f"({sum(vec) // (4 * 1280)} rows of 1280 float32)"
            ),
        ),
    ]


def run(quick: bool) -> list[Figure]:
    """The compressed-index figures at the sizes of the run."""
    if quick:
        return compressed_figures(20_000, 200)
    sizes = os.environ.get("HUBCAT_BENCH_COMPRESSED_SIZES", "1000000")
    return [f for n in sizes.split(",") for f in compressed_figures(int(n), 500)]
