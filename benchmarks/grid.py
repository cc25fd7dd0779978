"""Grid stage: throughput with 1 vs 2 local workers, and the cost and power of validation.

Figures (baselines measured in this run):

- ``2 workers tiles/s``: :func:`grid.run_units` on a LocalCluster with 2 worker processes (1
  thread each) against the same run with 1 worker; the scheduling loop only (cluster start-up
  and the model load on each worker are excluded, as they are paid once per volunteer session).
- ``grid overhead``: 1-worker grid tiles/s against a bare in-process :func:`embeddings.embed_tiles`
  on the same tiles and 1 thread (result store, validation, store writes, Dask).
- ``honest 1 - cos``: largest ``1 - cosine`` between honest replicas computed with 1 and 2 torch
  threads, the calibration of :attr:`grid.GridConfig.min_cosine` (against its tolerance).
- ``replicas per accepted unit`` and ``P(catch 1% liar)``: by Monte-Carlo simulation of the
  redundancy policy (:mod:`grid._policy`), default settings, quorum 2, 20 volunteers, one of
  which lies on 1% of its results; a full grid run of that size would take days here.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import Figure

STAGE = "grid"


def _throughput(quick: bool) -> list[Figure]:
    from embeddings import EmbedConfig, embed_tiles, load_model
    from grid import GridConfig, run_units
    from grid._selftest import synthetic_tile_store

    units, unit_size = (2, 1) if quick else (8, 4)
    ntiles = units * unit_size
    rates = {}
    with tempfile.TemporaryDirectory(prefix="hubcat-bench-grid-") as tmp:
        for n in (1, 2):
            store = synthetic_tile_store(Path(tmp) / f"w{n}", units=units, unit_size=unit_size)
            report = run_units(store, config=GridConfig(n_workers=n), progress=False)
            rates[n] = ntiles / report.run_time
        model = load_model(config=EmbedConfig(threads=1))
        tiles = np.concatenate([store.read_unit(u.unit_key)[1] for u in store.units()])
        t0 = time.perf_counter()
        v1 = embed_tiles(model, tiles)
        bare = ntiles / (time.perf_counter() - t0)
        v2 = embed_tiles(model.with_config(threads=2), tiles)
    worst = float(1.0 - np.min(np.sum(v1.astype(np.float64) * v2, axis=1)))
    tol = 1.0 - GridConfig().min_cosine
    return [
        Figure(
            STAGE,
            "2 workers tiles/s",
            rates[2],
            "tiles/s",
            "1 worker",
            rates[1],
            goal="~2 on 2 cores",
        ),
        Figure(
            STAGE,
            "grid overhead (1 worker tiles/s)",
            rates[1],
            "tiles/s",
            "bare embed_tiles 1 thread",
            bare,
        ),
        Figure(
            STAGE,
            "honest 1 - cos (1 vs 2 threads)",
            worst,
            "",
            "tolerance 1 - min_cosine",
            tol,
            note="calibration of GridConfig.min_cosine: honest differences must stay far below it",
        ),
    ]


def _policy(quick: bool) -> list[Figure]:
    from grid import GridConfig
    from grid._policy import simulate_policy

    cfg = GridConfig()
    units, runs = (10_000, 10) if quick else (100_000, 100)
    adaptive = simulate_policy(cfg, units=units, runs=runs, volunteers=20, lie_rate=0.01)
    plain = simulate_policy(
        GridConfig(trust_after=10**9), units=units // 10, runs=max(5, runs // 10), volunteers=20
    )
    per_liar = units // 20
    return [
        Figure(
            STAGE,
            "replicas per accepted unit (default policy)",
            adaptive.replicas_per_unit,
            "replicas",
            "fixed quorum 2",
            plain.replicas_per_unit,
            goal="< 1.3",
            note=f"simulated: {units} units, 20 volunteers, trust after {cfg.trust_after}, "
            f"spot checks {cfg.spot_check_rate}, canaries {cfg.canary_rate}",
        ),
        Figure(
            STAGE,
            "P(catch a 1%-of-units liar) over a run",
            adaptive.catch_probability,
            "",
            "goal",
            0.99,
            goal=">= 0.99",
            note=f"simulated over {runs} runs; the liar computes ~{per_liar} units per run; "
            f"units it got accepted alone are re-run once it is caught (left wrong at the end of "
            f"a run: {adaptive.wrong_units_left:.2f} on average)",
        ),
    ]


def run(quick: bool) -> list[Figure]:
    """All figures of the grid stage."""
    return _policy(quick) + _throughput(quick)
