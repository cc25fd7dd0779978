"""Search stage, archive scale: the compressed ``ivfpq_rerank`` catalogue index (run by
:mod:`benchmarks.search`).

Figures (baselines measured in the same run, on the synthetic vectors of
:func:`benchmarks.search.synthetic_vectors`, dimension 1280):

- resident bytes per vector of the index (codes, ids, centroids, codebooks, PCA) against the raw
  float32 vector (goal <= 128 B);
- recall@10 against exact inner-product search (goal >= 0.95) and queries/s against exact
  search's queries/s on the same batch (goal >= 10x at 10^6); the compressed queries re-rank
  from the vector shards in a local catalogue folder, reading them by row;
- index build time (train on the driver + encode the shards) with 2 Dask workers against 1
  (goal >= 1.7x for the encode step); LocalCluster start-up is not counted;
- opening a catalogue on a loopback S3 server (moto) and answering its first query, against
  opening the same catalogue in a local folder; and the bytes that first S3 query read (counted
  at the boto3 client, ``after-call`` events of every GetObject) against the catalogue's bytes
  (goal < 5 %).

Sizes: ``--quick`` 2x10^4 vectors (a few minutes); the full run 10^6
(``HUBCAT_BENCH_COMPRESSED_SIZES``, comma-separated, overrides).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
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


def _build(root: Path, meta, x, model, config, workers: int):
    from distributed import Client, LocalCluster

    from catalog import Catalogue

    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        t0 = time.perf_counter()
        cat = Catalogue.from_vectors(root, meta, x, model, config=config, client=client)
        total = time.perf_counter() - t0
    return cat, total


def compressed_figures(n: int, n_queries: int, *, train_size: int = 100_000) -> list[Figure]:
    """Every compressed-index figure at ``n`` vectors (module docstring)."""
    import faiss

    from benchmarks.search import DIM, synthetic_vectors
    from catalog import CatalogConfig, Catalogue

    faiss.omp_set_num_threads(cpu_threads())
    label = _label(n)
    x = synthetic_vectors(n, seed=0)
    q = synthetic_vectors(n_queries, seed=1)
    t0 = time.perf_counter()
    _, truth = faiss.knn(q, x, K, metric=faiss.METRIC_INNER_PRODUCT)
    exact_qps = n_queries / (time.perf_counter() - t0)
    _progress(f"{n} vectors; exact search {exact_qps:.0f} q/s")
    model = {"name": "synthetic", "weights_sha256": "2" * 64, "digest": "3" * 64, "dim": DIM}
    shard_rows = max(4096, n // 16)
    config = CatalogConfig(
        exact_max=1,
        compressed_min=1,
        shard_rows=shard_rows,
        recall_probes=100,
        train_size=train_size,
    )
    meta = _table(n)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="hubcat-bench-compressed-") as tmp:
        builds = {}
        for workers in (1, 2):
            faiss.omp_set_num_threads(1)  # the driver trains single-threaded in both runs
            cat, total = _build(Path(tmp) / f"w{workers}", meta, x, model, config, workers)
            builds[workers] = (cat, total, cat.manifest["index"]["build_seconds"])
            _progress(f"built on {workers} worker(s) in {total:.0f} s: {builds[workers][2]}")
        faiss.omp_set_num_threads(cpu_threads())
        cat = Catalogue.open(Path(tmp) / "w2")
        entry = cat.manifest["index"]
        index = cat._index
        index.search(q[:10], K)  # warm-up
        t0 = time.perf_counter()
        _, found = index.search(q, K)
        qps = n_queries / (time.perf_counter() - t0)
        recall = _recall(found, truth)
        per_vector = index.resident_bytes() / n
        (_, t1, s1), (_, t2, s2) = builds[1], builds[2]
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
                note=f"batch of {n_queries}; re-rank rows read from local shards by range",
            ),
            Figure(
                STAGE,
                f"ivfpq_rerank encode time 2 vs 1 Dask workers @{label}",
                s2["encode"],
                "s",
                "1 worker",
                s1["encode"],
                goal="ratio <= 1/1.7",
                note=(
                    f"{len(entry['parts'])} shards of {shard_rows} rows; train on the driver "
                    f"{s1['train']:.0f} s / {s2['train']:.0f} s; whole build (with metadata and "
                    f"provenance) {t1:.0f} s / {t2:.0f} s"
                ),
            ),
        ]
        figures += _s3_figures(Path(tmp) / "w2", q[0], label)
    return figures


def _s3_figures(local_root: Path, query: np.ndarray, label: str) -> list[Figure]:
    """Open + first query on loopback S3 against local; bytes read against the catalogue's."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        return [Figure(STAGE, "ivfpq_rerank S3 first query", float("nan"), "", note="no moto")]
    from catalog import Catalogue
    from hubcat.storage import open_object_store

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
            read = []

            def count(http_response, parsed, **kwargs):
                if http_response.status_code < 300:
                    read.append(int(parsed["ContentLength"]))

            store.client.meta.events.register("after-call.s3.GetObject", count)
            t0 = time.perf_counter()
            Catalogue.open(store).similar(query, k=K)
            return time.perf_counter() - t0, sum(read)

        local = float(np.median([first_local() for _ in range(3)]))
        runs = [first_s3() for _ in range(3)]
        s3 = float(np.median([r[0] for r in runs]))
        read = runs[-1][1]
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
            note="counted at the boto3 client (after-call GetObject ContentLength)",
        ),
    ]


def run(quick: bool) -> list[Figure]:
    """The compressed-index figures at the sizes of the run."""
    if quick:
        return compressed_figures(20_000, 200)
    sizes = os.environ.get("HUBCAT_BENCH_COMPRESSED_SIZES", "1000000")
    return [f for n in sizes.split(",") for f in compressed_figures(int(n), 500)]
