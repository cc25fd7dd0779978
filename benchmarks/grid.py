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
- ``boundary``: tiles/s of the same run on a real TLS grid on loopback (2 ``dask worker``
  processes) with the volunteer boundary (gate, inert decoding, message filter, attribution,
  replica endpoint) against the first release's path on the same machine (a stock TLS
  scheduler, workers writing a shared folder); alternating rounds, median of 3 each.
- ``live replicas per accepted unit``: the same grid with both volunteers trusted (signed
  ledger history), default policy, against the simulation of the same settings.
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


def _tls_grid(root: Path, name: str, *, gated: bool):
    """A TLS scheduler (with or without the gate) and two volunteers; returns (client, procs)."""
    import subprocess

    from distributed import Client, Security

    from grid import GridAuthority
    from grid._procs import scheduler_argv, scheduler_environment, start_scheduler, start_worker

    auth = GridAuthority.init(root / name)
    logs = root / f"{name}-logs"
    if gated:
        sched, address = start_scheduler(auth, logs, worker_ttl="30s")
    else:  # the first release's scheduler: TLS, no gate
        import json as _json

        logs.mkdir(parents=True, exist_ok=True)
        argv, env = scheduler_argv(
            auth, port=0, dashboard="127.0.0.1:0", scheduler_file=logs / "s.json"
        )
        argv = [a for a in argv if a != "grid.gate"]
        argv.remove("--preload")
        sched = subprocess.Popen(
            argv,
            env=scheduler_environment(env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        for _ in range(300):
            if (logs / "s.json").exists():
                break
            time.sleep(0.2)
        address = _json.loads((logs / "s.json").read_text())["address"]
    procs = [sched]
    for i in (1, 2):
        enr = auth.enroll(f"vol-{i}", days=1)
        procs.append(
            start_worker(
                address,
                name=f"vol-{i}",
                ca=auth.ca_file,
                cert=enr.cert,
                key=enr.key,
                log=logs / f"vol-{i}.log",
                preloads=("grid.volunteer",) if gated else (),
                env={"OMP_NUM_THREADS": "1"},
            )
        )
    if gated:
        security = auth.security("operator")
    else:
        cert, key = auth.cert_files("operator")
        security = Security(
            tls_ca_file=str(auth.ca_file),
            tls_client_cert=str(cert),
            tls_client_key=str(key),
            require_encryption=True,
        )
    client = Client(address, security=security, timeout=60)
    client.wait_for_workers(2, timeout=300)
    return auth, client, procs


def _boundary(quick: bool) -> list[Figure]:
    from grid import GridConfig, run_units
    from grid._engine import Engine
    from grid._procs import stop_processes
    from grid._selftest import synthetic_tile_store

    units, unit_size = (4, 1) if quick else (8, 2)
    ntiles = units * unit_size
    rounds = 3
    rates: dict[str, list[float]] = {"boundary": [], "baseline": []}
    live = sim = None
    with tempfile.TemporaryDirectory(prefix="hubcat-bench-boundary-") as tmp:
        root = Path(tmp)
        grids = {}
        procs = []
        Engine.require_gate = False
        try:
            for kind in ("baseline", "boundary"):
                auth, client, p = _tls_grid(root, kind, gated=kind == "boundary")
                grids[kind] = (auth, client)
                procs += p
            cfg = {
                "baseline": GridConfig(min_quorum=2, transfer="direct", trust_after=10**6),
                "boundary": GridConfig(min_quorum=2, trust_after=10**6),
            }
            for r in range(rounds + 1):  # round 0 warms up (model load on every worker)
                for kind in ("baseline", "boundary"):
                    auth, client = grids[kind]
                    store = synthetic_tile_store(
                        root / f"{kind}-{r}", units=units, unit_size=unit_size, seed=r
                    )
                    report = run_units(
                        store, client=client, config=cfg[kind], progress=False,
                        grid_dir=auth.directory,
                    )  # fmt: skip
                    if r and report.units_accepted == units:
                        rates[kind].append(ntiles / report.run_time)
            live, sim = _live_replication(root, grids["boundary"], quick)
        finally:
            Engine.require_gate = True
            for _, client in grids.values():
                client.close()
            stop_processes(procs)
    med = {k: float(np.median(v)) if v else float("nan") for k, v in rates.items()}
    return [
        Figure(
            STAGE,
            "TLS grid tiles/s with the boundary",
            med["boundary"],
            "tiles/s",
            "first release's path",
            med["baseline"],
            goal=">= 0.95 (under 5% overhead)",
            note=f"2 dask worker processes on loopback, quorum 2, {ntiles} tiles a round, "
            f"median of {rounds} alternating rounds: boundary {_fmt(rates['boundary'])}, "
            f"baseline {_fmt(rates['baseline'])}",
        ),
        Figure(
            STAGE,
            "live replicas per accepted unit (trusted)",
            live,
            "replicas",
            "simulated, same settings",
            sim,
            note="both volunteers trusted by signed ledger history; default spot checks and "
            "canaries; the live figure counts canaries as replicas",
        ),
    ]


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def _live_replication(root: Path, grid, quick: bool) -> tuple[float, float]:
    from grid import CreditLedger, GridConfig, load_ledger_key, run_units
    from grid._policy import simulate_policy
    from grid._selftest import synthetic_tile_store
    from hubcat.storage import open_object_store

    auth, client = grid
    units = 12 if quick else 40
    store = synthetic_tile_store(root / "live", units=units, unit_size=1, seed=99)
    cfg = GridConfig(min_quorum=2, max_in_flight=2)
    ledger = CreditLedger(
        open_object_store(store.uri).child("grid/ledger"),
        signing_key=load_ledger_key(auth.ledger_key_file),
    )
    for name in ("vol-1", "vol-2"):
        for i in range(cfg.trust_after):
            ledger.append(name, "valid", unit=f"history-{i}", tiles=1, credit=0.0)
    report = run_units(store, client=client, config=cfg, progress=False, grid_dir=auth.directory)
    sim = simulate_policy(
        cfg, units=2000, runs=5, volunteers=2, lie_rate=0.0, initial_streak=cfg.trust_after
    )
    return report.replicas_per_accepted_unit, sim.replicas_per_unit


def run(quick: bool) -> list[Figure]:
    """All figures of the grid stage."""
    return _policy(quick) + _throughput(quick) + _boundary(quick)
