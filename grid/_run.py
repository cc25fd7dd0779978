"""``run_units``: plan work units, run replicas on Dask workers, validate, accept, credit."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from grid._config import GridConfig
from grid._ledger import CreditLedger, cobblestones
from grid._records import UnitRecords, slug
from grid._results import ResultStore, agree, check_replica
from grid._task import run_replica
from grid.errors import GridConfigError, InvalidResultError

__all__ = ["GridReport", "run_units"]

logger = logging.getLogger("grid")

#: The volunteer name recorded for units computed on a LocalCluster (the operator's machine).
LOCAL_VOLUNTEER = "local"


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
    liars: list[str] = field(default_factory=list)
    min_quorum: int = 0
    min_cosine: float = 0.0
    dashboard: str = ""
    run_time: float = 0.0
    elapsed: float = 0.0

    @property
    def replicas_per_accepted_unit(self) -> float:
        return self.replicas_run / self.units_accepted if self.units_accepted else 0.0

    def as_dict(self) -> dict:
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
        if self.units_failed:
            lines.append("  re-run the same command to resume the units not accepted")
        return "\n".join(lines)


class _Engine:
    """The validator and planner of one run (operator side, single-threaded)."""

    def __init__(self, tile_store, model, emb, client, config, quorum, local, callback):
        from tiling.storage import open_object_store

        self.ts = tile_store
        self.model = model
        self.emb = emb
        self.client = client
        self.cfg = config
        self.quorum = quorum
        self.local = local
        self.callback = callback
        self.rng = random.Random(config.seed)
        base = open_object_store(tile_store.uri)
        self.root = base.child(f"grid/{model.digest}")
        self.records = UnitRecords(self.root)
        self.results = ResultStore(self.root.child("results"))
        self.ledger = CreditLedger(base.child("grid/ledger"))
        self.futures: dict = {}  # future -> (unit_key, replica_id, submitted_at, kind)
        self.units: dict[str, dict] = {}
        self.vectors: dict[tuple[str, str], object] = {}
        self.report = GridReport(
            model_name=model.name,
            model_digest=model.digest,
            min_quorum=quorum,
            min_cosine=config.min_cosine,
        )
        self.names: dict[str, str] = {}
        self.accepted_keys: list[str] = []
        self.streaks: dict[str, int] | None = None
        self.presign = bool(config.presigned_urls)
        self.layouts: dict[str, dict] = {}
        self.zarr_meta: dict[str, dict] = {}
        if self.presign and not hasattr(base, "presigned_get_url"):
            msg = (
                f"GridConfig.presigned_urls is set but the tile store {tile_store.uri} is not "
                "under s3://; pre-signed URLs serve S3 stores only: unset it for local stores"
            )
            raise GridConfigError(msg)

    # -- bookkeeping --------------------------------------------------------------------
    def refresh_workers(self) -> dict[str, str]:
        info = (
            self.client.scheduler_info(n_workers=-1)
            if _takes_n_workers()
            else self.client.scheduler_info()
        )
        prefix = "local-" if self.local else ""  # local workers are named 0, 1, ...
        self.names = {
            addr: f"{prefix}{w.get('name', addr)}" for addr, w in info.get("workers", {}).items()
        }
        return self.names

    def window(self) -> int:
        """How many replicas may be in flight: twice the workers' threads, at least 4."""
        if self.cfg.max_in_flight is not None:
            return self.cfg.max_in_flight
        try:
            info = self.client.scheduler_info(n_workers=-1)["workers"]
            threads = sum(int(w.get("nthreads", 1)) for w in info.values())
        except Exception:
            threads = 1
        return max(4, 2 * threads)

    def save(self, rec: dict) -> None:
        self.records.put(rec)

    def load(self, unit) -> dict:
        rec = self.records.get(unit.unit_key)
        if rec is None:
            rec = {
                "unit_key": unit.unit_key,
                "tile_ids": [str(t) for t in unit.tile_ids],
                "state": "pending",
                "replicas": {},
                "accepted": None,
            }
            self.save(rec)
        for r in rec["replicas"].values():
            if r["status"] == "running":  # a previous process stopped while it ran
                r["status"] = "lost"
        rec["single"] = False
        self.units[unit.unit_key] = rec
        return rec

    def used_workers(self, rec: dict) -> set[str]:
        return {
            r["worker"]
            for r in rec["replicas"].values()
            if r["status"] in ("valid", "invalid", "failed") and r.get("worker")
        }

    def counted(self, rec: dict) -> int:
        return sum(r["status"] in ("valid", "invalid", "failed") for r in rec["replicas"].values())

    def running(self, rec: dict) -> int:
        return sum(r["status"] == "running" for r in rec["replicas"].values())

    def trusted(self, name: str) -> bool:
        if self.streaks is None:
            self.streaks = {n: v.streak for n, v in self.ledger.summary().items()}
        return self.quorum > 1 and self.streaks.get(name, 0) >= self.cfg.trust_after

    def record_outcome(self, name: str, valid: bool) -> None:
        if self.streaks is not None:
            self.streaks[name] = self.streaks.get(name, 0) + 1 if valid else 0

    # -- submission ---------------------------------------------------------------------
    def submit(self, rec: dict, *, workers: list[str] | None, kind: str = "replica") -> None:
        rid = uuid.uuid4().hex
        spec = {
            "tile_store": self.ts.uri,
            "unit_key": rec["unit_key"],
            "tile_ids": rec["tile_ids"],
            "slug": slug(rec["unit_key"]),
            "replica": rid,
            "results": self.results.uri,
            "model_name": self.model_name_arg,
            "weights": self.weights_arg,
            "weights_sha256": self.model.weights_sha256,
            "digest": self.model.digest,
        }
        if self.presign:
            spec.update(self.transfer_spec(rec, spec["slug"], rid))
        fut = self.client.submit(
            run_replica,
            spec,
            key=f"hubcat-unit-{rid}",
            workers=workers,
            allow_other_workers=False,
            pure=False,
            priority=10 if rec["replicas"] else 0,
        )
        if kind != "canary":
            rec["replicas"][rid] = {"worker": None, "status": "running", "kind": kind, "reason": ""}
        self.futures[fut] = (rec["unit_key"], rid, time.monotonic(), kind)

    def transfer_spec(self, rec: dict, unit_slug: str, rid: str) -> dict:
        """Pre-signed URLs of one replica; the worker then gets no store URI at all."""
        from grid._presign import chunk_layout, presign_replica

        key = rec["unit_key"]
        if key not in self.layouts:
            unit = self.ts.unit(key)
            self.layouts[key] = {
                **chunk_layout(self.ts, unit, self.zarr_meta),
                "sha256": unit.sha256,
            }
        layout = self.layouts[key]
        transfer = presign_replica(
            self.ts.objects, self.results, layout, unit_slug, rid, self.cfg.url_expires
        )
        return {"tile_store": None, "results": None, "transfer": transfer}

    def plan(self, rec: dict) -> None:
        """Submit what ``rec`` still needs (nothing when accepted, disputed or busy)."""
        if rec["state"] != "pending":
            return
        names = self.names
        if not names:
            return
        used = self.used_workers(rec)
        required = 1 if rec["single"] else self.quorum
        if self.running(rec) or self.best_group(rec) >= required:
            return
        if self.counted(rec) >= self.cfg.max_replicas:
            rec["state"] = "disputed"
            self.save(rec)
            self.emit("disputed", rec["unit_key"])
            return
        if not rec["replicas"] and self.quorum > 1:
            trusted = [a for a, n in names.items() if self.trusted(n)]
            if trusted and self.rng.random() >= self.cfg.spot_check_rate:
                rec["single"] = True  # adaptive replication: one trusted result suffices
                self.submit(rec, workers=trusted)
                self.maybe_canary(trusted)
                return
        if not rec["replicas"] or not used:
            self.submit(rec, workers=None)
            return
        eligible = [a for a, n in names.items() if n not in used]
        if eligible:
            self.submit(rec, workers=eligible)

    def maybe_canary(self, trusted: list[str]) -> None:
        """Now and then, send an already-accepted unit (a known answer) to trusted volunteers."""
        if not self.accepted_keys or self.rng.random() >= self.cfg.canary_rate:
            return
        key = self.rng.choice(self.accepted_keys)
        self.submit(self.units[key], workers=trusted, kind="canary")
        self.report.canaries_run += 1

    # -- results ------------------------------------------------------------------------
    def worker_of(self, fut) -> str | None:
        try:
            who = self.client.who_has([fut]).get(fut.key, ())
        except Exception:
            return None
        for addr in who:
            return self.names.get(addr) or self.refresh_workers().get(addr)
        return None

    def handle(self, fut) -> None:
        unit_key, rid, _t0, kind = self.futures.pop(fut)
        rec = self.units[unit_key]
        status = fut.status
        worker = self.worker_of(fut) if status == "finished" else None
        if kind == "canary":
            self.handle_canary(fut, unit_key, rid, worker)
            return
        rep = rec["replicas"].get(rid)
        if rep is None:
            return
        if status == "finished" and worker is None:
            rep["status"] = "lost"
            rep["reason"] = "finished but its worker left before it was attributed"
            self.report.replicas_lost += 1
        elif status == "finished":
            rep["worker"] = worker
            self.report.replicas_run += 1
            self.validate(rec, rid, rep)
        elif status == "error":
            rep["status"] = "failed"
            rep["reason"] = self.error_text(fut)
            self.report.replicas_failed += 1
            logger.warning("unit %s replica failed: %s", unit_key, rep["reason"])
        else:  # cancelled / lost with its worker
            rep["status"] = "lost"
            rep["reason"] = status
            self.report.replicas_lost += 1
        fut.release()
        self.save(rec)
        self.plan(rec)

    def error_text(self, fut) -> str:
        if not self.local:
            # Never unpickle what a volunteer sent (the gate also replaces it by plain text).
            return f"task {fut.key} failed on a worker; see the scheduler log"
        try:
            exc = fut.exception(timeout=5)
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        return f"{type(exc).__name__}: {exc}"[:500]

    def read_checked(self, rec: dict, rid: str, label: str):
        receipt, data = self.results.read(slug(rec["unit_key"]), rid)
        return check_replica(
            receipt,
            data,
            n_tiles=len(rec["tile_ids"]),
            dim=self.model.dim,
            norm_tolerance=self.cfg.norm_tolerance,
            label=label,
        )

    def validate(self, rec: dict, rid: str, rep: dict) -> None:
        label = f"unit {rec['unit_key']} replica from {rep['worker']}"
        if rep["worker"] in self.used_workers(rec):
            rep["status"] = "lost"  # same volunteer twice: not independent; re-plan elsewhere
            rep["reason"] = "duplicate volunteer"
            self.report.replicas_run -= 1
            self.report.replicas_lost += 1
            return
        try:
            vec = self.read_checked(rec, rid, label)
        except InvalidResultError as exc:
            self.invalid(rec, rid, rep, exc.reason, str(exc))
            return
        rep["status"] = "valid"
        self.vectors[(rec["unit_key"], rid)] = vec
        self.decide(rec)

    def replica_vectors(self, rec: dict, rid: str):
        key = (rec["unit_key"], rid)
        if key not in self.vectors:
            self.vectors[key] = self.read_checked(rec, rid, f"unit {rec['unit_key']}")
        return self.vectors[key]

    def best_group(self, rec: dict) -> int:
        """Size (distinct volunteers) of the largest group of agreeing valid replicas."""
        valid = [(rid, r) for rid, r in rec["replicas"].items() if r["status"] == "valid"]
        best = 0
        for rid, _rep in valid:
            ref = self.replica_vectors(rec, rid)
            workers = {
                orep["worker"]
                for o, orep in valid
                if o == rid or agree(ref, self.replica_vectors(rec, o), self.cfg.min_cosine)
            }
            best = max(best, len(workers))
        return best

    def decide(self, rec: dict) -> None:
        valid = [(rid, r) for rid, r in rec["replicas"].items() if r["status"] == "valid"]
        need = 1 if rec["single"] else self.quorum
        for rid, _rep in valid:
            ref = self.replica_vectors(rec, rid)
            group = [
                (o, orep)
                for o, orep in valid
                if o == rid or agree(ref, self.replica_vectors(rec, o), self.cfg.min_cosine)
            ]
            if len({orep["worker"] for _, orep in group}) >= need:
                self.accept(rec, rid, group, valid)
                return

    def accept(self, rec: dict, rid: str, group: list, valid: list) -> None:
        in_group = {o for o, _ in group}
        for o, orep in valid:
            if o not in in_group:
                self.invalid(rec, o, orep, "mismatch", "disagrees with the accepted result")
        vec = self.replica_vectors(rec, rid)
        volunteers = sorted({orep["worker"] for _, orep in group})
        if self.local:
            # Every process of a LocalCluster is the operator's own machine: one identity, so
            # the provenance of a local run does not depend on which process took which unit.
            volunteers = [LOCAL_VOLUNTEER]
        sha = self.emb.write(rec["unit_key"], rec["tile_ids"], vec, volunteers=volunteers)
        rec["state"] = "accepted"
        rec["accepted"] = {
            "replica": rid,
            "sha256": sha,
            "volunteers": volunteers,
            "single": bool(rec["single"]),
        }
        credit = cobblestones(len(rec["tile_ids"]), self.cfg.flop_per_forward)
        for name in volunteers:
            self.record_outcome(name, True)
            self.ledger.append(
                name,
                "valid",
                unit=rec["unit_key"],
                tiles=len(rec["tile_ids"]),
                credit=credit,
                model_digest=self.model.digest,
            )
        for fut, (uk, _r, _t, kind) in list(self.futures.items()):
            if uk == rec["unit_key"] and kind != "canary":
                fut.cancel()  # surplus replicas
                self.futures.pop(fut)
                rec["replicas"][_r]["status"] = "lost"
                rec["replicas"][_r]["reason"] = "not needed"
        self.accepted_keys.append(rec["unit_key"])
        self.report.units_accepted += 1
        self.save(rec)
        self.emit("accepted", rec["unit_key"])

    def invalid(self, rec: dict, rid: str, rep: dict, reason: str, text: str) -> None:
        rep["status"] = "invalid"
        rep["reason"] = f"{reason}: {text}"
        rec["single"] = False  # a unit with an invalid result needs a full quorum
        self.report.replicas_invalid += 1
        name = rep["worker"]
        logger.warning("invalid result from %s: %s", name, text)
        self.record_outcome(name, False)
        self.ledger.append(
            name, "invalid", unit=rec["unit_key"], reason=reason, model_digest=self.model.digest
        )
        if name not in self.report.liars:
            self.report.liars.append(name)
        self.reopen_singles(name)

    def reopen_singles(self, name: str) -> None:
        """Units accepted on ``name``'s word alone are re-run with a full quorum."""
        for rec in self.units.values():
            acc = rec.get("accepted") or {}
            if rec["state"] == "accepted" and acc.get("single") and acc.get("volunteers") == [name]:
                self.emb.root.delete(self.emb._record_key(rec["unit_key"]))
                self.ledger.append(
                    name,
                    "revoked",
                    unit=rec["unit_key"],
                    tiles=len(rec["tile_ids"]),
                    credit=-cobblestones(len(rec["tile_ids"]), self.cfg.flop_per_forward),
                    reason="accepted on the word of a volunteer later caught",
                    model_digest=self.model.digest,
                )
                rec["replicas"][acc["replica"]]["status"] = "invalid"
                rec["state"], rec["accepted"], rec["single"] = "pending", None, False
                self.accepted_keys.remove(rec["unit_key"])
                self.report.units_accepted -= 1
                self.save(rec)
                self.plan(rec)

    def handle_canary(self, fut, unit_key: str, rid: str, worker: str | None) -> None:
        rec = self.units[unit_key]
        status = fut.status
        fut.release()
        if status != "finished" or worker is None:
            return
        self.report.replicas_run += 1
        label = f"canary {unit_key} from {worker}"
        try:
            vec = self.read_checked(rec, rid, label)
            ok = agree(
                vec, self.replica_vectors(rec, rec["accepted"]["replica"]), self.cfg.min_cosine
            )
            reason = "canary"
        except InvalidResultError as exc:
            ok, reason = False, exc.reason
        if not ok:
            self.invalid(
                rec, rid, {"worker": worker, "status": "running"}, reason, f"{label} is wrong"
            )

    def emit(self, event: str, unit_key: str) -> None:
        if self.callback is not None:
            self.callback(event, unit_key)

    # -- loop ---------------------------------------------------------------------------
    def run(self, planned: list, progress) -> None:
        from distributed import wait

        for unit in planned:
            rec = self.load(unit)
            if rec["state"] == "accepted":
                acc = rec["accepted"]
                vec = self.replica_vectors(rec, acc["replica"])
                self.emb.write(rec["unit_key"], rec["tile_ids"], vec, volunteers=acc["volunteers"])
                self.report.units_accepted += 1
                self.accepted_keys.append(rec["unit_key"])
            elif rec["state"] == "disputed":
                rec["state"] = "pending"  # a new run gives disputed units another chance
                rec["replicas"] = {}
        last_progress = time.monotonic()
        done_before = -1
        while True:
            pending = [r for r in self.units.values() if r["state"] == "pending"]
            finished = self.report.units_accepted + sum(
                r["state"] == "disputed" for r in self.units.values()
            )
            progress(finished)
            if not pending:
                break
            if finished != done_before:
                done_before, last_progress = finished, time.monotonic()
            self.refresh_workers()
            window = self.window()
            for rec in pending:
                # start new units only while few are in flight, so that trust earned during the
                # run (adaptive replication) applies to the units planned after it
                if rec["replicas"] or len(self.futures) < window:
                    self.plan(rec)
            if not self.futures:
                if time.monotonic() - last_progress > self.cfg.idle_timeout:
                    logger.warning(
                        "no worker and no progress for %.0f s: stopping", self.cfg.idle_timeout
                    )
                    break
                time.sleep(0.5)
                continue
            with contextlib.suppress(TimeoutError):
                wait(list(self.futures), timeout=1.0, return_when="FIRST_COMPLETED")
            for fut in [f for f in self.futures if f.done()]:
                if fut in self.futures:
                    self.handle(fut)
                    last_progress = time.monotonic()
            now = time.monotonic()
            for fut, (uk, rid, t0, kind) in list(self.futures.items()):
                if now - t0 > self.cfg.replica_timeout and fut.status == "pending":
                    fut.cancel()
                    self.futures.pop(fut)
                    if kind != "canary":
                        rec = self.units[uk]
                        rec["replicas"][rid]["status"] = "lost"
                        rec["replicas"][rid]["reason"] = "timed out waiting for a worker"
                        self.report.replicas_lost += 1
                        self.save(rec)
            if not self.names and now - last_progress > self.cfg.idle_timeout:
                logger.warning("no worker for %.0f s: stopping", self.cfg.idle_timeout)
                break
        for fut in list(self.futures):
            fut.cancel()
        self.futures.clear()
        for rec in self.units.values():
            changed = False
            for r in rec["replicas"].values():
                if r["status"] == "running":
                    r["status"], r["reason"], changed = "lost", "run stopped", True
            if changed:
                self.save(rec)


def _takes_n_workers() -> bool:
    import inspect

    from distributed import Client

    return "n_workers" in inspect.signature(Client.scheduler_info).parameters


def run_units(
    tile_store,
    model_name: str | None = None,
    weights: str | None = None,
    *,
    client=None,
    config: GridConfig | None = None,
    progress: bool = True,
    callback: Callable[[str, str], None] | None = None,
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
        :class:`distributed.LocalCluster` with ``config.n_workers`` worker processes.
    config : GridConfig or None
        Redundancy, validation, churn and credit settings.
    progress : bool
        Show a progress bar and print the dashboard link and a summary.
    callback : callable or None
        Called as ``callback(event, unit_key)`` with ``event`` ``"accepted"`` or ``"disputed"``.

    Returns
    -------
    GridReport

    Raises
    ------
    embeddings.EmbeddingError
        If the model cannot be loaded in this process.
    """
    from distributed import Client, LocalCluster

    from embeddings import EmbeddingStore, load_model
    from grid.volunteer import ModelPlugin
    from tiling import TileStore

    config = config or GridConfig()
    t0 = time.perf_counter()
    if not hasattr(tile_store, "units"):
        tile_store = TileStore.open(tile_store)
    model = load_model(model_name, weights)
    emb = EmbeddingStore(tile_store, model)
    units = tile_store.units()
    planned = [u for u in units if not emb.has(u.unit_key)]
    local = client is None
    quorum = config.quorum(local)
    with contextlib.ExitStack() as stack:
        if local:
            import dask

            stack.enter_context(
                dask.config.set(
                    {
                        "distributed.scheduler.allowed-failures": config.allowed_failures,
                        "distributed.scheduler.worker-ttl": config.worker_ttl,
                    }
                )
            )
            if planned:
                cluster = stack.enter_context(
                    LocalCluster(
                        n_workers=config.n_workers,
                        threads_per_worker=config.threads_per_worker,
                        processes=True,
                        dashboard_address="127.0.0.1:0",
                        silence_logs=logging.ERROR,
                    )
                )
                client = stack.enter_context(Client(cluster))
                client.register_plugin(
                    ModelPlugin(
                        model_name,
                        None if weights is None else str(weights),
                        model.weights_sha256,
                        model.digest,
                        config.threads_per_worker,
                    )
                )
        engine = _Engine(tile_store, model, emb, client, config, quorum, local, callback)
        engine.model_name_arg = model_name
        engine.weights_arg = None if weights is None else str(weights)
        engine.report.units_planned = len(planned)
        engine.report.units_skipped = len(units) - len(planned)
        engine.root.put(
            "config.json",
            json.dumps(
                {"grid": config.as_dict(), "quorum": quorum, "digest": config.digest()}, indent=1
            ).encode(),
        )
        if planned:
            dashboard = getattr(client, "dashboard_link", "") or ""
            engine.report.dashboard = dashboard
            if progress and dashboard:
                print(f"Dask dashboard: {dashboard}")
            bar = _progress_bar(len(planned), progress, stack)
            t_run = time.perf_counter()
            engine.run(planned, bar)
            engine.report.run_time = time.perf_counter() - t_run
    report = engine.report
    report.units_failed = report.units_planned - report.units_accepted
    report.elapsed = time.perf_counter() - t0
    if progress:
        print(report)
    return report


def _progress_bar(total: int, show: bool, stack: contextlib.ExitStack):
    if not show:
        return lambda done: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = stack.enter_context(
        Progress(
            TextColumn("units"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        )
    )
    task = bar.add_task("units", total=total)
    return lambda done: bar.update(task, completed=done)
