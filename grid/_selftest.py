"""``hubcat grid selftest``: a real TLS grid on loopback with liars and a killed worker."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from grid._config import GridConfig
from grid._pki import GridAuthority
from grid._procs import start_scheduler, start_volunteer, stop_processes
from grid.errors import GridConfigError
from hubcat.progress import Progress
from hubcat.synthetic import write_synthetic_mosaic

__all__ = ["selftest", "synthetic_tile_store"]

logger = logging.getLogger("grid.selftest")


def synthetic_tile_store(directory: Path, *, units: int = 6, unit_size: int = 2, seed: int = 0):
    """A small tile store of ``units`` work units of ``unit_size`` tiles (one zoom)."""
    from tiling import TileStore, TilingConfig

    directory.mkdir(parents=True, exist_ok=True)
    ntiles = units * unit_size
    fits_path = write_synthetic_mosaic(
        directory / "selftest.fits", (224, 224 * ntiles), seed=seed, n_sources=60
    )
    store = TileStore.create(directory / "tiles", TilingConfig(zooms=(1,), unit_size=unit_size))
    store.add_mosaic(fits_path)
    return store


def selftest(
    workers: int = 4,
    liars: int = 1,
    kill: int = 1,
    *,
    spoofers: int = 0,
    overwriters: int = 0,
    colluders: int = 0,
    units: int = 6,
    unit_size: int = 2,
    workdir: str | Path | None = None,
    liar_mode: str = "perturb",
    progress: Progress | None = None,
) -> dict:
    """Run a real TLS grid on loopback and check that it keeps its promises.

    A private CA is created, ``workers`` volunteers are enrolled and started as ``dask worker``
    processes, a ``dask scheduler`` with the gate preload runs the units with quorum 2, and
    ``kill`` honest workers are killed (SIGKILL) as soon as the first unit is accepted. Among
    the workers, ``liars`` return perturbed vectors; ``spoofers`` compute nothing, claim that
    honest workers hold their results, forge credit-ledger entries and send pickled payloads
    to the scheduler, the operator and the other workers; ``overwriters`` overwrite every
    result they can reach and re-use their capabilities; ``colluders`` return the same wrong
    vectors as each other (see :mod:`grid._attacks`). The accepted vectors are compared with an
    honest single-machine run.

    Parameters
    ----------
    workers, liars, kill : int
        Worker processes, how many of them lie, how many honest ones are killed mid-run.
    spoofers, overwriters, colluders : int
        Attackers of each kind among the workers.
    units, unit_size : int
        Size of the synthetic tile store.
    workdir : path-like or None
        Where to keep everything (a temporary folder by default).
    liar_mode : str
        How liars lie (see :data:`grid._liar.MODES`).
    progress : callable or None
        Passed to :func:`grid.run_units` (see :mod:`hubcat.progress`).

    Returns
    -------
    dict
        ``units``, ``replicas_run``, ``replicas_per_accepted_unit``, ``liars_detected``,
        ``units_lost``, ``equal_to_honest``, ``wrong_vectors_accepted`` (units whose accepted
        vectors differ from the honest run), ``code_executed`` (payload markers found),
        ``forged_ledger_entries_accepted`` and details.

    Raises
    ------
    GridConfigError
        If fewer than 2 honest workers would survive (a quorum of 2 needs them).
    """
    from distributed import Client

    from embeddings import EmbeddingStore, embed_tiles, load_model
    from grid._ledger import CreditLedger, load_ledger_key
    from grid._records import GridArea
    from grid._run import run_units
    from hubcat.storage import open_object_store

    attackers = liars + spoofers + overwriters + colluders
    honest_n = workers - attackers
    if honest_n - kill < 2 or min(workers, liars, kill, spoofers, overwriters, colluders) < 0:
        msg = (
            f"--workers {workers} with {attackers} attacker(s) and --kill {kill} leaves "
            f"{honest_n - kill} honest worker(s); a quorum of 2 needs at least 2 (use more workers)"
        )
        raise GridConfigError(msg)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="hubcat-selftest-"))
        workdir = Path(workdir)
        markers = workdir / "markers"
        markers.mkdir(parents=True, exist_ok=True)
        authority = GridAuthority.init(workdir / "pki")
        store = synthetic_tile_store(workdir / "data", units=units, unit_size=unit_size)
        model = load_model()
        sched, address = start_scheduler(authority, workdir / "logs", worker_ttl="10s")
        kinds = (
            ["liar"] * liars
            + ["spoofer"] * spoofers
            + ["overwriter"] * overwriters
            + ["colluder"] * colluders
        )
        names = [f"vol-{i + 1}" for i in range(workers)]
        honest = names[attackers:]
        roles = dict(zip(names, kinds + ["honest"] * honest_n, strict=True))
        procs = {}
        stack.callback(lambda: stop_processes([*procs.values(), sched]))
        client = stack.enter_context(Client(address, security=authority.security("operator")))
        base = open_object_store(store.uri)
        for name in honest:
            procs[name] = start_volunteer(authority, address, workdir / "logs", name)
        client.wait_for_workers(len(honest), timeout=180)
        victims = list(client.scheduler_info(n_workers=-1)["workers"])
        for name in names[:attackers]:
            role = roles[name]
            if role == "liar":
                preload, env = "grid._liar", {"HUBCAT_LIAR_MODE": liar_mode}
            else:
                attack = {
                    "spoofer": "spoof,pickles,forge-ledger",
                    "overwriter": "overwrite",
                    "colluder": "collude",
                }[role]
                preload = "grid._attacks"
                env = {
                    "HUBCAT_ATTACK": attack,
                    "HUBCAT_ATTACK_MARKERS": str(markers),
                    "HUBCAT_ATTACK_VICTIMS": ",".join(victims),
                    "HUBCAT_ATTACK_RESULTS": str(Path(base.uri) / "grid" / model.digest / "results")
                    if not base.uri.startswith("s3://")
                    else "",
                    "HUBCAT_ATTACK_LEDGER": str(Path(base.uri) / "grid" / "ledger"),
                }
            procs[name] = start_volunteer(
                authority,
                address,
                workdir / "logs",
                name,
                preloads=("grid.volunteer", preload),
                env=env,
            )
        client.wait_for_workers(workers, timeout=180)
        killed: list[str] = []

        def on_event(event: str, unit_key: str) -> None:
            if event != "accepted" or len(killed) >= kill:
                return
            info = client.scheduler_info(n_workers=-1)["workers"]
            processing = client.processing()
            busy = [str(w.get("name")) for a, w in info.items() if processing.get(a)]
            idle = [str(w.get("name")) for a, w in info.items() if not processing.get(a)]
            for name in [n for n in busy + idle if n in honest]:  # busy ones first: mid-unit
                if len(killed) < kill:
                    procs[name].kill()  # SIGKILL: the worker vanishes mid-run
                    killed.append(name)

        config = GridConfig(
            min_quorum=2, max_replicas=6, replica_timeout=60, idle_timeout=180, trust_after=1000
        )
        report = run_units(
            store,
            client=client,
            config=config,
            progress=progress,
            callback=on_event,
            grid_dir=authority.directory,
        )

        # The honest single-machine run, in this process.
        emb = EmbeddingStore(store, model)
        equal, wrong = True, 0
        worst = 1.0
        for unit in store.units():
            if not emb.has(unit.unit_key):
                equal = False
                continue
            _, got = emb.read(unit.unit_key)
            _, tiles = store.read_unit(unit.unit_key)
            want = embed_tiles(model, tiles)
            cos = float(np.min(np.sum(got.astype(np.float64) * want, axis=1)))
            worst = min(worst, cos)
            if cos < config.min_cosine:
                wrong += 1
            equal = equal and cos >= config.min_cosine
        time.sleep(1.0)  # let any payload that was going to run, run
        executed = sorted(p.name for p in markers.iterdir())
        ledger = CreditLedger(
            GridArea(base).ledger_store(),
            public_key=load_ledger_key(authority.ledger_key_file).public_key(),
        )
        forged_accepted = sum(
            1 for e in ledger.verified_entries() if str(e.get("unit", "")).startswith("forged-")
        )
        unsigned = ledger.check().unsigned
    detected = sorted(report.liars)
    return {
        "units": report.units_planned,
        "units_accepted": report.units_accepted,
        "replicas_run": report.replicas_run,
        "replicas_per_accepted_unit": round(report.replicas_per_accepted_unit, 3),
        "replicas_invalid": report.replicas_invalid,
        "replicas_lost": report.replicas_lost,
        "liars": [n for n in names if roles[n] == "liar"],
        "spoofers": [n for n in names if roles[n] == "spoofer"],
        "overwriters": [n for n in names if roles[n] == "overwriter"],
        "colluders": [n for n in names if roles[n] == "colluder"],
        "liars_detected": detected,
        "honest_blamed": sorted(set(detected) & set(honest)),
        "killed": killed,
        "units_lost": report.units_planned - report.units_accepted,
        "equal_to_honest": bool(equal),
        "wrong_vectors_accepted": wrong,
        "code_executed": len(executed),
        "forged_ledger_entries_accepted": forged_accepted,
        "forged_ledger_entries_named": len(unsigned),
        "min_cosine_to_honest": worst,
        "tolerance": config.min_cosine,
        "workers": workers,
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }
