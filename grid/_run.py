"""``run_units``: plan work units, run replicas on Dask workers, validate, accept, credit."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from grid._config import GridConfig
from grid._engine import LOCAL_VOLUNTEER, Engine
from hubcat.progress import MESSAGE, Progress, reporter

__all__ = ["LOCAL_VOLUNTEER", "GridReport", "operator_context", "run_units", "start_local_cluster"]

logger = logging.getLogger("grid")


@dataclass
class GridReport:
    """Outcome of :func:`run_units` (printable).

    Attributes
    ----------
    units_planned : int
        Units not yet in the embedding store when the run started.
    units_accepted, units_skipped, units_failed : int
        Accepted in this run; already accepted before it; disputed or still pending at the end.
    replicas_run : int
        Replicas that produced a result (valid or not) in this run.
    replicas_invalid, replicas_failed, replicas_lost : int
        Rejected by the validator; raised on the worker; lost with their worker or timed out.
    liars : list of str
        Volunteers whose results were rejected as invalid in this run.
    run_time : float
        Wall time of the scheduling loop, without cluster start-up and shutdown (s).
    elapsed : float
        Wall time (s).
    """

    model_name: str = ""
    model_digest: str = ""
    units_planned: int = 0
    units_accepted: int = 0
    units_skipped: int = 0
    units_failed: int = 0
    replicas_run: int = 0
    replicas_invalid: int = 0
    replicas_failed: int = 0
    replicas_lost: int = 0
    canaries_run: int = 0
    units_reopened: int = 0
    liars: list[str] = field(default_factory=list)
    transfer: str = ""
    min_quorum: int = 0
    min_cosine: float = 0.0
    dashboard: str = ""
    run_time: float = 0.0
    elapsed: float = 0.0

    @property
    def replicas_per_accepted_unit(self) -> float:
        return self.replicas_run / self.units_accepted if self.units_accepted else 0.0

    def as_dict(self) -> dict:
        """The report as a JSON-ready dict.

        Returns
        -------
        dict
            Every field, plus ``replicas_per_accepted_unit`` rounded to 4 decimals.
        """
        out = asdict(self)
        out["replicas_per_accepted_unit"] = round(self.replicas_per_accepted_unit, 4)
        return out

    def __str__(self) -> str:
        lines = [
            f"grid run of {self.model_name} ({self.model_digest[:12]}) in {self.elapsed:.1f} s",
            f"  units: {self.units_planned} planned, {self.units_accepted} accepted, "
            f"{self.units_skipped} already done, {self.units_failed} not accepted",
            f"  replicas: {self.replicas_run} run ({self.replicas_per_accepted_unit:.2f} per "
            f"accepted unit), {self.replicas_invalid} invalid, {self.replicas_failed} failed, "
            f"{self.replicas_lost} lost/re-run",
            f"  validation: quorum {self.min_quorum}, min cosine {self.min_cosine}",
        ]
        if self.liars:
            lines.append(f"  invalid results from: {', '.join(sorted(self.liars))}")
        if self.units_reopened:
            lines.append(
                f"  {self.units_reopened} unit(s) accepted on a caught volunteer's word reopened"
            )
        if self.units_failed:
            lines.append("  re-run the same command to resume the units not accepted")
        return "\n".join(lines)


def run_units(
    tile_store,
    model_name: str | None = None,
    weights: str | None = None,
    *,
    client=None,
    config: GridConfig | None = None,
    progress: Progress | None = None,
    callback: Callable[[str, str], None] | None = None,
    grid_dir: str | os.PathLike[str] | None = None,
    ledger_key=None,
) -> GridReport:
    """Embed every unit of a tile store on Dask workers, validating every result.

    Parameters
    ----------
    tile_store : tiling.TileStore or str
        The tile store (or its URI).
    model_name, weights : str or None
        As for :func:`embeddings.load_model` (default: the offline default model).
    client : distributed.Client or None
        A client of the grid scheduler (operator certificate). ``None`` starts a
        :class:`distributed.LocalCluster` with ``config.n_workers`` worker processes (or
        threads of this process with ``config.in_process``).
    config : GridConfig or None
        Redundancy, validation, churn and credit settings.
    progress : callable or None
        Called as ``progress("units", accepted, planned, "")`` as units are accepted, and with
        the stage ``"message"`` for the dashboard link and the closing summary
        (:mod:`hubcat.progress`). Nothing is printed.
    callback : callable or None
        Called as ``callback(event, unit_key)`` with ``event`` ``"accepted"`` or ``"disputed"``.
    grid_dir : path-like or None
        The operator's grid directory: its register gives each volunteer's enrolment account
        (replicas of a unit go to different accounts) and revocations, and its ``ledger.key``
        signs the credit ledger. Default: the ``hubcat_grid_dir`` attribute of ``client``
        (set by the CLI's connection to a TLS grid), if any.
    ledger_key : path-like, Ed25519PrivateKey or None
        The key that signs the credit ledger (default: the grid directory's, else
        :func:`grid.default_ledger_key`, made on first use).

    Returns
    -------
    GridReport

    Raises
    ------
    embeddings.EmbeddingError
        If the model cannot be loaded in this process.
    """
    from embeddings import CLASS_MIN_COSINE, EmbeddingStore, load_model
    from tiling import TileStore

    config = config or GridConfig()
    report_progress = reporter(progress)
    t0 = time.perf_counter()
    if not hasattr(tile_store, "units"):
        tile_store = TileStore.open(tile_store)
    model = load_model(model_name, weights)
    emb = EmbeddingStore(tile_store, model)
    units = tile_store.units()
    planned = [u for u in units if not emb.has(u.unit_key)]
    local = client is None
    quorum = config.quorum(local)
    accounts, revoked, ledger_key = operator_context(client, grid_dir, ledger_key)
    with contextlib.ExitStack() as stack:
        if local:
            import dask
            import distributed.config  # noqa: F401  (its defaults must exist before the set)

            stack.enter_context(
                dask.config.set(
                    {
                        **config.scheduler_settings(),
                    }
                )
            )
            if planned:
                client = start_local_cluster(stack, config, model, model_name, weights)
        report = GridReport(
            model_name=model.name,
            model_digest=model.digest,
            min_quorum=quorum,
            min_cosine=config.min_cosine,
            units_planned=len(planned),
            units_skipped=len(units) - len(planned),
        )
        engine = Engine(
            tile_store,
            model,
            emb,
            client,
            config,
            quorum,
            local,
            report,
            ledger_key=ledger_key,
            accounts=accounts,
            revoked=revoked,
            callback=callback,
            model_name=model_name,
            weights=None if weights is None else str(weights),
        )
        report.transfer = engine.transfer
        engine.root.put(
            "config.json",
            json.dumps(
                {
                    "grid": config.as_dict(),
                    "quorum": quorum,
                    "digest": config.digest(),
                    "numerical_class": model.numerical_class,
                    "class_min_cosine": dict(CLASS_MIN_COSINE),
                },
                indent=1,
            ).encode(),
        )
        if planned:
            dashboard = getattr(client, "dashboard_link", "") or ""
            engine.report.dashboard = dashboard
            if dashboard:
                report_progress(MESSAGE, 0, None, f"Dask dashboard: {dashboard}")
            total = len(planned)
            report_progress("units", 0, total, "")

            def bar(done: int) -> None:
                report_progress("units", done, total, "")

            t_run = time.perf_counter()
            engine.start()
            stack.callback(engine.close)
            engine.run(planned, bar)
            engine.report.run_time = time.perf_counter() - t_run
    report = engine.report
    report.units_failed = report.units_planned - report.units_accepted
    report.elapsed = time.perf_counter() - t0
    report_progress(MESSAGE, 0, None, str(report))
    return report


def operator_context(client, grid_dir, ledger_key):
    """``(accounts, revoked, ledger_key)`` of a run: from the grid directory's register (given,
    or the ``hubcat_grid_dir`` the CLI sets on ``client`` for a TLS grid) and its ledger key,
    else no accounts and :func:`grid.default_ledger_key`."""
    from grid._ledger import load_ledger_key

    accounts, revoked = {}, None
    if grid_dir is None:  # set by pipeline._connect.scheduler_client for a TLS grid
        grid_dir = getattr(client, "hubcat_grid_dir", None)
    if grid_dir is not None:
        from grid._pki import GridAuthority

        authority = GridAuthority.open(grid_dir)
        accounts = authority.accounts()
        if ledger_key is None:
            ledger_key = authority.ledger_key_file

        def revoked(name: str) -> bool:
            entry = authority.register()["volunteers"].get(name)
            return bool(entry and entry.get("revoked"))

    if ledger_key is None or isinstance(ledger_key, (str, os.PathLike)):
        ledger_key = load_ledger_key(ledger_key)
    return accounts, revoked, ledger_key


def start_local_cluster(
    stack: contextlib.ExitStack, config: GridConfig, model, name, weights, numerical_class=None
):
    """A client of a new :class:`distributed.LocalCluster` whose workers load and verify
    ``model`` at start-up (closed with ``stack``); call inside the run's dask config."""
    from distributed import Client, LocalCluster

    from grid._worker import ModelPlugin

    cluster = stack.enter_context(
        LocalCluster(
            n_workers=config.n_workers,
            threads_per_worker=config.threads_per_worker,
            processes=not config.in_process,
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        )
    )
    client = stack.enter_context(Client(cluster))
    client.register_plugin(
        ModelPlugin(
            name,
            None if weights is None else str(weights),
            model.weights_sha256,
            model.digest,
            config.threads_per_worker,
            numerical_class,
        )
    )
    return client
