"""The operator's validator and planner of one grid run (single-threaded, operator side).

It places replicas, reads who computed each one from the scheduler's own records, validates
and compares results, accepts units into the :class:`embeddings.EmbeddingStore`, signs credit
into the :class:`grid.CreditLedger`, and reaches back when a volunteer is caught. The state of
every unit lives in :class:`grid.UnitRecords` (:class:`UnitState`, :class:`ReplicaStatus`), so a
stopped operator resumes where it was.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time

from grid._ledger import CreditLedger, cobblestones
from grid._placement import Placement
from grid._reach_back import ReachBack
from grid._records import GridArea, ReplicaStatus, UnitRecords, UnitState, slug
from grid._results import ResultStore, agree, check_replica
from grid.errors import GridConfigError, InvalidResultError

__all__ = ["LOCAL_VOLUNTEER", "Engine", "ReplicaStatus", "UnitState"]

logger = logging.getLogger("grid")

#: The volunteer name recorded for units computed on a LocalCluster (the operator's machine).
LOCAL_VOLUNTEER = "local"


_COUNTED = (ReplicaStatus.VALID, ReplicaStatus.INVALID, ReplicaStatus.FAILED)


class Engine(Placement, ReachBack):
    """Plan, place, validate, accept and credit the units of one run.

    ``Engine.require_gate`` (true) refuses a ``tls://`` scheduler without the hubcat gate; only
    the boundary benchmark turns it off, to measure the first release's path as its baseline.

    Parameters
    ----------
    tile_store : tiling.TileStore
    model : embeddings.EmbeddingModel
    emb : embeddings.EmbeddingStore
    client : distributed.Client
    config : GridConfig
    quorum : int
        Agreeing replicas on distinct volunteers (and accounts) that accept a unit.
    local : bool
        The client belongs to a LocalCluster this run started (the operator's own processes).
    report : GridReport
        Filled in as the run goes.
    ledger_key : Ed25519PrivateKey
        Signs the credit ledger.
    accounts : dict or None
        Volunteer name -> enrolment account (replicas of a unit go to different accounts).
    revoked : callable or None
        ``revoked(name) -> bool`` from the operator's register.
    callback : callable or None
        ``callback(event, unit_key)``.
    """

    def __init__(
        self,
        tile_store,
        model,
        emb,
        client,
        config,
        quorum: int,
        local: bool,
        report,
        *,
        ledger_key,
        accounts: dict[str, str] | None = None,
        revoked=None,
        callback=None,
        model_name=None,
        weights=None,
    ) -> None:

        self.ts = tile_store
        self.model = model
        self.emb = emb
        self.client = client
        self.cfg = config
        self.quorum = quorum
        self.local = local
        self.report = report
        self.callback = callback
        self.model_name_arg = model_name
        self.weights_arg = weights
        self.accounts = accounts or {}
        self.register_revoked = revoked or (lambda name: False)
        self.scheduler_revoked: set[str] = set()
        self.rng = random.Random(config.seed)
        self.placement = random.SystemRandom()  # which volunteers get a unit: not predictable
        area = GridArea(tile_store)
        self.root = area.run_root(model.digest)
        self.records = UnitRecords(self.root)
        self.results = ResultStore(self.root.child("results"))
        self.ledger = CreditLedger(area.ledger_store(), signing_key=ledger_key)
        self.futures: dict = {}  # future -> (unit_key, replica_id, submitted_at, kind)
        self.units: dict[str, dict] = {}
        self.unit_refs: dict[str, object] = {}
        self.vectors: dict[tuple[str, str], object] = {}
        self.names: dict[str, str] = {}
        self.accepted_keys: list[str] = []
        self.streaks: dict[str, int] | None = None
        self.transfer = self._transfer_mode(area.base)
        self.endpoint = None
        self.layouts: dict[str, dict] = {}
        self.gated = False
        self.attributed: dict[str, str] = {}
        self.classes_of: dict[str, set[str]] = {}

    require_gate = True

    # -- set-up ---------------------------------------------------------------------------
    def _transfer_mode(self, base) -> str:
        mode = self.cfg.transfer_mode(local=self.local, remote=hasattr(base, "presigned_get_url"))
        if mode == "presigned" and not hasattr(base, "presigned_get_url"):
            msg = (
                f"pre-signed URLs were asked for but the tile store {self.ts.uri} is not under "
                "s3://; pre-signed URLs serve S3 stores only: use transfer='endpoint' for folders"
            )
            raise GridConfigError(msg)
        return mode

    def start(self) -> None:
        """Open the replica endpoint (when used) and find out whether the scheduler is gated."""
        if self.transfer == "endpoint":
            from grid._endpoint import ReplicaEndpoint

            sec = getattr(self.client, "security", None)
            cert = getattr(sec, "tls_client_cert", None)
            key = getattr(sec, "tls_client_key", None)
            self.endpoint = ReplicaEndpoint(
                self.ts,
                self.results,
                host=self.cfg.endpoint_host,
                port=self.cfg.endpoint_port,
                advertise=self.cfg.endpoint_advertise,
                certfile=cert,
                keyfile=key,
            )
        if not self.local:
            try:
                answer = self.client.sync(self.client.scheduler.hubcat_attribution, keys=[])
            except Exception:
                answer = None
            self.gated = isinstance(answer, dict)
            address = str(getattr(self.client.scheduler, "address", ""))
            if address.startswith("tls://") and not self.gated and self.require_gate:
                msg = (
                    f"the scheduler at {address} does not run the hubcat gate: on a TLS grid, "
                    "start it with `hubcat grid scheduler --dir GRID`"
                )
                raise GridConfigError(msg)

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()

    # -- bookkeeping ----------------------------------------------------------------------
    def refresh_workers(self) -> dict[str, str]:
        # Ask the scheduler itself: Client.scheduler_info() returns a cache that the client's
        # periodic refresh may have replaced, just then, by one without per-worker entries
        # (every replica in flight would then look orphaned and be re-planned).
        info = self.client.sync(self.client.scheduler.identity, n_workers=-1)
        prefix = "local-" if self.local else ""  # local workers are named 0, 1, ...
        self.names = {
            addr: f"{prefix}{w.get('name', addr)}" for addr, w in info.get("workers", {}).items()
        }
        self.threads = sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values())
        self.classes_of = {
            addr: {
                k.removeprefix("class-")
                for k in (w.get("resources") or {})
                if k.startswith("class-")
            }
            for addr, w in info.get("workers", {}).items()
        }
        if self.gated:
            with contextlib.suppress(Exception):
                removed = self.client.sync(self.client.scheduler.hubcat_revoked)
                self.scheduler_revoked = set(removed or ())
        return self.names

    def is_revoked(self, name: str | None) -> bool:
        """Whether ``name`` was revoked (by the operator's register or the scheduler's gate)."""
        return bool(name) and (name in self.scheduler_revoked or self.register_revoked(name))

    def window(self) -> int:
        """How many replicas may be in flight: twice the workers' threads, at least 4."""
        if self.cfg.max_in_flight is not None:
            return self.cfg.max_in_flight
        return max(4, 2 * getattr(self, "threads", 1))

    def save(self, rec: dict) -> None:
        self.records.put(rec)

    def load(self, unit) -> dict:
        rec = self.records.get(unit.unit_key)
        if rec is None:
            rec = {
                "unit_key": unit.unit_key,
                "tile_ids": [str(t) for t in unit.tile_ids],
                "state": UnitState.PENDING,
                "replicas": {},
                "accepted": None,
            }
            self.save(rec)
        for r in rec["replicas"].values():
            if r["status"] == ReplicaStatus.RUNNING:  # a previous process stopped while it ran
                r["status"] = ReplicaStatus.LOST
        rec["single"] = False
        self.units[unit.unit_key] = rec
        self.unit_refs[unit.unit_key] = unit
        return rec

    def account(self, name: str) -> str:
        return self.accounts.get(name, name)

    def used_workers(self, rec: dict) -> set[str]:
        return {
            r["worker"]
            for r in rec["replicas"].values()
            if r["status"] in _COUNTED and r.get("worker")
        }

    def counted(self, rec: dict) -> int:
        return sum(r["status"] in _COUNTED for r in rec["replicas"].values())

    def running(self, rec: dict) -> int:
        return sum(r["status"] == ReplicaStatus.RUNNING for r in rec["replicas"].values())

    def trusted(self, name: str) -> bool:
        if self.streaks is None:
            self.streaks = {n: v.streak for n, v in self.ledger.summary().items()}
        return self.quorum > 1 and self.streaks.get(name, 0) >= self.cfg.trust_after

    def record_outcome(self, name: str, valid: bool) -> None:
        if self.streaks is not None:
            self.streaks[name] = self.streaks.get(name, 0) + 1 if valid else 0

    # -- results --------------------------------------------------------------------------
    def worker_of(self, fut) -> str | None:
        """Who computed ``fut``: from the scheduler's own records, never from a worker's word."""
        if self.local:
            return LOCAL_VOLUNTEER
        if self.gated:
            key = str(fut.key)
            if key not in self.attributed:
                self.attribute([fut])
            return self.attributed.pop(key, None)
        # a cluster of the operator's own processes without the gate (tcp://, tests)
        try:
            who = self.client.who_has([fut]).get(fut.key, ())
        except Exception:
            return None
        for addr in who:
            return self.names.get(addr) or self.refresh_workers().get(addr)
        return None

    def attribute(self, futures) -> None:
        """Ask the scheduler, in one call, who computed each of ``futures`` (gated grids)."""
        keys = [str(f.key) for f in futures if f.status == "finished"]
        if not keys or not self.gated:
            return
        try:
            done = self.client.sync(
                self.client.scheduler.hubcat_attribution, keys=keys, forget=True
            )
        except Exception:
            return
        self.attributed.update({k: v for k, v in (done or {}).items() if v})

    def handle(self, fut) -> None:
        unit_key, rid, _t0, kind, _addr = self.futures.pop(fut)
        rec = self.units[unit_key]
        status = fut.status
        worker = self.worker_of(fut) if status == "finished" else None
        if self.endpoint is not None:
            self.endpoint.settle(rid)
        if kind == "canary":
            self.handle_canary(fut, unit_key, rid, worker)
            return
        rep = rec["replicas"].get(rid)
        if rep is None:
            return
        if status == "finished" and worker is None:
            rep["status"] = ReplicaStatus.LOST
            rep["reason"] = "finished but its worker left before it was attributed"
            self.report.replicas_lost += 1
        elif status == "finished" and self.is_revoked(worker):
            rep["status"] = ReplicaStatus.LOST
            rep["reason"] = f"{worker} was revoked; its result is discarded"
            self.report.replicas_lost += 1
        elif status == "finished":
            rep["worker"] = worker
            self.report.replicas_run += 1
            self.validate(rec, rid, rep)
        elif status == "error":
            rep["status"] = ReplicaStatus.FAILED
            rep["worker"] = rep.get("placed")
            rep["reason"] = self.error_text(fut)
            self.report.replicas_failed += 1
            logger.warning("unit %s replica failed: %s", unit_key, rep["reason"])
        else:  # cancelled / lost with its worker
            rep["status"] = ReplicaStatus.LOST
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

    def read_checked(self, rec: dict, rid: str, label: str, *, expect_sha: str | None = None):
        """A replica's vectors and their sha256, validated (sizes checked before any read).

        Raises
        ------
        InvalidResultError
            As :func:`grid.check_replica`; ``"tampered"`` when the stored bytes are not those
            the endpoint received (or that were validated before), which is not the volunteer's
            doing.
        """
        n, dim = len(rec["tile_ids"]), self.model.dim
        got = self.endpoint.take(rid) if self.endpoint is not None else None
        if got is not None:  # exactly what the volunteer sent through its capability
            receipt, data = ResultStore.parse(got[0], got[1], label)
        else:
            receipt, data = self.results.read(slug(rec["unit_key"]), rid, max_bytes=n * dim * 4)
        vectors = check_replica(receipt, data, n_tiles=n, dim=dim, label=label)
        received = expect_sha
        if received is not None and received != receipt.get("sha256"):
            msg = f"{label}: the stored result is not the one received (changed in storage)"
            raise InvalidResultError("tampered", msg)
        return vectors, receipt["sha256"]

    def validate(self, rec: dict, rid: str, rep: dict) -> None:
        label = f"unit {rec['unit_key']} replica from {rep['worker']}"
        others = self.used_workers(rec)
        if rep["worker"] in others or self.account(rep["worker"]) in {
            self.account(w) for w in others
        }:
            rep["status"] = ReplicaStatus.LOST  # not independent; re-plan elsewhere
            rep["reason"] = "same volunteer or account as another replica"
            self.report.replicas_run -= 1
            self.report.replicas_lost += 1
            return
        try:
            vec, sha = self.read_checked(rec, rid, label)
        except InvalidResultError as exc:
            if exc.reason == "tampered":  # not the volunteer's doing: discard and re-run
                rep["status"], rep["reason"] = ReplicaStatus.LOST, str(exc)
                self.report.replicas_lost += 1
                logger.warning("%s", exc)
                return
            self.invalid(rec, rid, rep, exc.reason, str(exc))
            return
        rep["status"] = ReplicaStatus.VALID
        rep["sha256"] = sha
        self.vectors[(rec["unit_key"], rid)] = vec
        self.decide(rec)

    def replica_vectors(self, rec: dict, rid: str):
        key = (rec["unit_key"], rid)
        if key not in self.vectors:
            sha = rec["replicas"].get(rid, {}).get("sha256")
            label = f"unit {rec['unit_key']}"
            self.vectors[key], _ = self.read_checked(rec, rid, label, expect_sha=sha)
        return self.vectors[key]

    def groups(self, rec: dict):
        for rid, r in list(rec["replicas"].items()):
            if r["status"] == ReplicaStatus.VALID and (rec["unit_key"], rid) not in self.vectors:
                try:
                    self.replica_vectors(rec, rid)
                except InvalidResultError as exc:  # a stored result changed since it was checked
                    r["status"], r["reason"] = ReplicaStatus.LOST, str(exc)
                    self.save(rec)
        valid = [
            (rid, r) for rid, r in rec["replicas"].items() if r["status"] == ReplicaStatus.VALID
        ]
        for rid, _rep in valid:
            ref = self.replica_vectors(rec, rid)
            group = [
                (o, orep)
                for o, orep in valid
                if o == rid or self.replicas_agree(rec, ref, self.replica_vectors(rec, o))
            ]
            yield rid, group, valid

    def replicas_agree(self, rec: dict, a, b) -> bool:
        """Whether two valid replicas' results of ``rec`` agree (vectors: every tile's cosine)."""
        return agree(a, b, self.min_cosine(rec))

    def best_group(self, rec: dict) -> int:
        """Size (distinct volunteers) of the largest group of agreeing valid replicas."""
        return max((len({r["worker"] for _, r in g}) for _, g, _ in self.groups(rec)), default=0)

    def decide(self, rec: dict) -> None:
        need = self.required(rec)
        for rid, group, valid in self.groups(rec):
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
        sha = self.emb.write(
            rec["unit_key"],
            rec["tile_ids"],
            vec,
            volunteers=volunteers,
            numerical_class=rec.get("class") or self.model.numerical_class,
        )
        rec["state"] = UnitState.ACCEPTED
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
        self.cancel_surplus(rec)
        self.accepted_keys.append(rec["unit_key"])
        self.report.units_accepted += 1
        self.save(rec)
        self.emit("accepted", rec["unit_key"])

    def cancel_surplus(self, rec: dict) -> None:
        """Cancel the replicas of an accepted unit still in flight (they are not needed)."""
        for fut, (uk, r, _t, kind, _a) in list(self.futures.items()):
            if uk == rec["unit_key"] and kind != "canary":
                fut.cancel()
                self.futures.pop(fut)
                rec["replicas"][r]["status"] = ReplicaStatus.LOST
                rec["replicas"][r]["reason"] = "not needed"
                if self.endpoint is not None:
                    self.endpoint.settle(r)
                    self.endpoint.take(r)

    def invalid(self, rec: dict, rid: str, rep: dict, reason: str, text: str) -> None:
        rep["status"] = ReplicaStatus.INVALID
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
        self.reopen_singles({name})

    def handle_canary(self, fut, unit_key: str, rid: str, worker: str | None) -> None:
        rec = self.units[unit_key]
        status = fut.status
        fut.release()
        if status != "finished" or worker is None:
            return
        self.report.replicas_run += 1
        label = f"canary {unit_key} from {worker}"
        try:
            vec, _ = self.read_checked(rec, rid, label)
            ok = agree(
                vec, self.replica_vectors(rec, rec["accepted"]["replica"]), self.min_cosine(rec)
            )
            reason = "canary"
        except InvalidResultError as exc:
            ok, reason = False, exc.reason
        if not ok:
            self.invalid(
                rec,
                rid,
                {"worker": worker, "status": ReplicaStatus.RUNNING},
                reason,
                f"{label} is wrong",
            )

    def emit(self, event: str, unit_key: str) -> None:
        if self.callback is not None:
            self.callback(event, unit_key)

    # -- loop -----------------------------------------------------------------------------
    def run(self, planned: list, progress) -> None:
        from distributed import wait

        self.resume(planned)
        last_progress = time.monotonic()
        done_before = -1
        while True:
            pending = [r for r in self.units.values() if r["state"] == UnitState.PENDING]
            finished = self.report.units_accepted + sum(
                r["state"] == UnitState.DISPUTED for r in self.units.values()
            )
            progress(finished)
            canaries = [f for f, v in self.futures.items() if v[3] == "canary"]
            if not pending and not canaries:
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
            done = [f for f in self.futures if f.done()]
            self.attribute(done)
            for fut in done:
                if fut in self.futures:
                    self.handle(fut)
                    last_progress = time.monotonic()
            self.expire()
            if not self.names and time.monotonic() - last_progress > self.cfg.idle_timeout:
                logger.warning("no worker for %.0f s: stopping", self.cfg.idle_timeout)
                break
        self.stop()

    def expire(self) -> None:
        """Re-plan replicas that waited too long for their worker, or whose worker was revoked."""
        now = time.monotonic()
        for fut, (uk, rid, t0, kind, addr) in list(self.futures.items()):
            gone = addr and addr not in self.names
            revoked = addr and self.is_revoked(self.names.get(addr, ""))
            late = now - t0 > self.cfg.replica_timeout and fut.status == "pending"
            if not (late or gone or revoked):
                continue
            fut.cancel()
            self.futures.pop(fut)
            if self.endpoint is not None:
                self.endpoint.settle(rid)
                self.endpoint.take(rid)
            if kind != "canary":
                rec = self.units[uk]
                rep = rec["replicas"][rid]
                rep["status"] = ReplicaStatus.LOST
                rep["reason"] = (
                    "its volunteer was revoked"
                    if revoked
                    else "its worker left"
                    if gone
                    else "timed out waiting for a worker"
                )
                self.report.replicas_lost += 1
                self.save(rec)

    def stop(self) -> None:
        for fut in list(self.futures):
            fut.cancel()
        self.futures.clear()
        for rec in self.units.values():
            changed = False
            for r in rec["replicas"].values():
                if r["status"] == ReplicaStatus.RUNNING:
                    r["status"], r["reason"], changed = ReplicaStatus.LOST, "run stopped", True
            if changed:
                self.save(rec)
