"""``hubcat serve`` under load: requests/s and p50/p99 latency of the service against the same
queries made in-process, in the same run.

The catalogue: the two real WFPC2 sample mosaics that ship with ``mpdaf`` (the demo's), tiled at
zoom 1 with a small stride (458 tiles; 40 with ``--quick``), with vectors drawn from the
calibrated synthetic distribution of :mod:`benchmarks.search` (embedding every tile here would
take the benchmark's whole budget; the search cost depends on the vectors' count and dimension,
not on where they came from). The model is the real default one, so image queries are embedded
for real.

Three query kinds, each 16 clients at once: similar by tile id, cone search (60 arcsec) and
similar by uploaded PNG (a tile's own cutout). In-process, 16 threads call
:meth:`catalog.Catalogue.similar` / ``cone`` on one opened catalogue (for images: the PNG decoded
as the service decodes it, then ``similar``). The service runs as its own process (``python -m
pipeline serve``, API keys and the signed usage ledger on, as in production); the clients are
threads of this process, one keep-alive HTTP session each, on loopback. Every figure is the
median of 3 repetitions. The goal (issue 17): the service's p50 within 2x of in-process for the
look-ups.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks._common import Figure

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 16
REPEATS = 3


def _build(root: Path, quick: bool) -> Path:
    """A catalogue of real sample tiles with calibrated synthetic vectors."""
    from benchmarks.search import synthetic_vectors
    from catalog import Catalogue
    from embeddings import EmbeddingStore, load_model
    from pipeline.samples import sample_paths
    from tiling import TileStore, TilingConfig

    ts = TileStore.create(
        root / "tiles", TilingConfig(zooms=(1,), stride=112 if quick else 24, unit_size=256)
    )
    for path in sample_paths():
        ts.add_mosaic(str(path))
    model = load_model()
    es = EmbeddingStore(ts, model)
    units = ts.units()
    vectors = synthetic_vectors(sum(len(u.tile_ids) for u in units), d=model.dim)
    start = 0
    for unit in units:
        n = len(unit.tile_ids)
        es.write(
            unit.unit_key, list(unit.tile_ids), vectors[start : start + n], volunteers=["bench"]
        )
        start += n
    out = root / "catalogue"
    Catalogue.build(out, ts, es)
    return out


def _percentiles(latencies_ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(latencies_ms, 50)), float(np.percentile(latencies_ms, 99))


def _in_process(calls: list) -> dict:
    """Run the zero-argument ``calls`` from CLIENTS threads; latencies and requests/s."""

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        latencies = list(pool.map(timed, calls))
    wall = time.perf_counter() - t0
    p50, p99 = _percentiles(latencies)
    return {"p50": p50, "p99": p99, "rps": len(calls) / wall}


def _over_http(url: str, headers: dict, reqs: list[dict]) -> dict:
    from benchmarks._serve_load import run_load

    out = run_load(url, reqs, headers=headers, concurrency=CLIENTS, max_seconds=600)
    bad = [s for s in out["status"] if s != 200]
    if bad or out["timed_out"]:
        msg = f"the service answered {len(bad)} of {out['sent']} requests with an error: {sorted(set(bad))} {out['errors'][:2]}"
        raise RuntimeError(msg)
    p50, p99 = _percentiles(out["latencies_ms"])
    return {"p50": p50, "p99": p99, "rps": out["rps"]}


def _median(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def run(quick: bool) -> list[Figure]:
    import warnings

    import requests
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    from catalog import Catalogue, CatalogWarning
    from catalog.provenance import generate_signing_key, write_key_pair
    from pipeline.serve import KeyStore
    from pipeline.serve._images import cutout_png, read_upload

    warnings.filterwarnings("ignore", category=CatalogWarning)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="hubcat-bench-serve-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        cat_dir = _build(work, quick)
        cat = Catalogue.open(cat_dir)
        meta = cat.metadata()
        print(
            f"   catalogue: {len(cat)} tiles, built in {time.perf_counter() - t0:.1f} s", flush=True
        )

        keys = KeyStore(work / "keys.json")
        _key, secret = keys.add(
            "bench", ["read", "search-by-image"], rate=1e6, burst=10**6, daily=10**12
        )
        write_key_pair(generate_signing_key("bench"), work / "ledger.key")
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [
            sys.executable,
            "-m",
            "pipeline",
            "serve",
            str(cat_dir),
            "--port",
            str(port),
            "--keys",
            str(work / "keys.json"),
            "--usage",
            str(work / "usage.jsonl"),
            "--signing-key",
            str(work / "ledger.key"),
        ]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
        log = open(work / "serve.log", "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"hubcat serve did not start:\n{(work / 'serve.log').read_text()}"
                    )
                try:
                    requests.get(url + "/openapi.json", timeout=2)
                    break
                except requests.ConnectionError:
                    time.sleep(0.2)
            headers = {"X-API-Key": secret}
            rng = np.random.default_rng(0)
            n_lookup = 96 if quick else 480
            n_image = 16 if quick else 48
            ids = [str(t) for t in meta["tile_id"]]
            rows = rng.integers(0, len(meta), n_lookup)
            tiles = [ids[i] for i in rows]
            coords = [(float(meta["ra"].iloc[i]), float(meta["dec"].iloc[i])) for i in rows]
            image_ids = [ids[i] for i in rng.integers(0, len(meta), n_image)]
            pngs = {}
            for tid in set(image_ids):
                path = work / f"{tid}.png"
                path.write_bytes(cutout_png(cat.tile(tid).pixels))
                pngs[tid] = path

            def png_query(tid):
                query, stretch, _ = read_upload(pngs[tid].read_bytes(), max_bytes=1 << 24)
                return cat.similar(query, k=10, stretch=stretch)

            kinds = {
                "tile-id search": (
                    [lambda t=t: cat.similar(t, k=10) for t in tiles],
                    [{"path": f"/api/similar/tile/{t}", "params": {"k": 10}} for t in tiles],
                    "<= 2",
                ),
                "cone search": (
                    [
                        lambda c=c: cat.cone(SkyCoord(c[0] * u.deg, c[1] * u.deg), 60 * u.arcsec)
                        for c in coords
                    ],
                    [
                        {"path": "/api/cone", "params": {"ra": c[0], "dec": c[1], "radius": 60}}
                        for c in coords
                    ],
                    "<= 2",
                ),
                "image search": (
                    [lambda t=t: png_query(t) for t in image_ids],
                    [
                        {
                            "method": "POST",
                            "path": "/api/similar/image",
                            "params": {"k": 10},
                            "file": str(pngs[t]),
                        }
                        for t in image_ids
                    ],
                    "",
                ),
            }
            for name, (calls, reqs, goal) in kinds.items():
                _in_process(calls[:CLIENTS]), _over_http(url, headers, reqs[:CLIENTS])  # warm
                local = _median([_in_process(calls) for _ in range(REPEATS)])
                served = _median([_over_http(url, headers, reqs) for _ in range(REPEATS)])
                note = (
                    f"p99 {served['p99']:.1f} ms served vs {local['p99']:.1f} ms in-process; "
                    f"{len(calls)} queries x {REPEATS}, {CLIENTS} clients"
                )
                figures.append(
                    Figure(
                        "serve",
                        f"{name} p50 latency",
                        served["p50"],
                        "ms",
                        "in-process p50",
                        local["p50"],
                        goal=goal,
                        note=note,
                    )
                )
                figures.append(
                    Figure(
                        "serve",
                        f"{name} throughput",
                        served["rps"],
                        "req/s",
                        "in-process req/s",
                        local["rps"],
                    )
                )
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    return figures
