"""Where the replicas of a unit go: placement by the operator, within one numerical class.

:class:`Placement` is the part of :class:`grid._engine.Engine` that decides which volunteers
compute a unit: at random (``random.SystemRandom``) among the least busy eligible volunteers,
never two of one enrolment account, never one that was revoked, all within the unit's
numerical class (the runtime and precision its vectors are computed with), a full quorum at
once, plus trusted singles, spot checks and canaries (adaptive replication).
"""

from __future__ import annotations

import time
import uuid

from grid._records import ReplicaStatus, UnitState, slug
from grid._task import run_replica

__all__ = ["Placement"]


class Placement:
    """Placement rules of the engine (mixed into :class:`grid._engine.Engine`)."""

    # -- placement and submission ---------------------------------------------------------
    def in_flight(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _uk, _rid, _t, _kind, addr in self.futures.values():
            counts[addr] = counts.get(addr, 0) + 1
        return counts

    def pick(self, candidates: list[str]) -> list[str] | None:
        """One worker, chosen by the operator at random among the least busy candidates."""
        if self.local and self.quorum == 1:
            return None  # the operator's own processes: let the scheduler balance
        if not candidates:
            return None
        load = self.in_flight()
        least = min(load.get(a, 0) for a in candidates)
        return [self.placement.choice([a for a in candidates if load.get(a, 0) == least])]

    def submit(self, rec: dict, *, workers: list[str] | None, kind: str = "replica") -> None:
        rid = uuid.uuid4().hex
        unit_slug = slug(rec["unit_key"])
        spec = {
            "tile_store": self.ts.uri,
            "unit_key": rec["unit_key"],
            "tile_ids": rec["tile_ids"],
            "slug": unit_slug,
            "replica": rid,
            "results": self.results.uri,
            "model_name": self.model_name_arg,
            "weights": self.weights_arg,
            "weights_sha256": self.model.weights_sha256,
            "digest": self.model.digest,
            "numerical_class": rec.get("class"),
        }
        if self.transfer == "presigned":
            spec.update(self.presigned_spec(rec, unit_slug, rid))
        elif self.transfer == "endpoint":
            unit = self.unit_refs[rec["unit_key"]]
            transfer = self.endpoint.grant(
                unit, unit_slug, rid, self.model.dim, self.cfg.url_expires
            )
            spec.update(
                {"tile_store": None, "results": None, "transfer": {**transfer, "endpoint": True}}
            )
        fut = self.client.submit(
            run_replica,
            spec,
            key=f"hubcat-unit-{rid}",
            workers=workers,
            allow_other_workers=False,
            pure=False,
            priority=10 if rec["replicas"] else 0,
        )
        addr = workers[0] if workers else ""
        if kind != "canary":
            rec["replicas"][rid] = {
                "worker": None,
                "placed": self.names.get(addr) if addr else None,
                "status": ReplicaStatus.RUNNING,
                "kind": kind,
                "reason": "",
            }
        self.futures[fut] = (rec["unit_key"], rid, time.monotonic(), kind, addr)

    def presigned_spec(self, rec: dict, unit_slug: str, rid: str) -> dict:
        """Pre-signed URLs of one replica; the worker then gets no store URI at all."""
        from grid._presign import chunk_layout, presign_replica

        key = rec["unit_key"]
        if key not in self.layouts:
            unit = self.unit_refs.get(key) or self.ts.unit(key)
            layout = chunk_layout(self.ts, unit)
            self.layouts[key] = {**layout, "sha256": unit.sha256}
        transfer = presign_replica(
            self.ts.objects, self.results, self.layouts[key], unit_slug, rid, self.cfg.url_expires
        )
        return {"tile_store": None, "results": None, "transfer": transfer}

    def eligible(self, rec: dict) -> list[str]:
        """Workers that may take another replica of ``rec``: new volunteers of new accounts."""
        used = self.used_workers(rec) | {
            r.get("placed")
            for r in rec["replicas"].values()
            if r["status"] == ReplicaStatus.RUNNING and r.get("placed")
        }
        used_accounts = {self.account(n) for n in used}
        return [
            a
            for a, n in self.names.items()
            if n not in used and self.account(n) not in used_accounts and not self.is_revoked(n)
        ]

    # -- numerical classes (homogeneous redundancy) ---------------------------------------
    def allowed_class(self, cls: str) -> bool:
        """Whether vectors of class ``cls`` carry this run's digest (same precision)."""
        parts = cls.split("-")
        return len(parts) >= 2 and parts[1] == self.model.resolved.precision

    def in_class(self, rec: dict, workers: list[str]) -> list[str]:
        """The workers of ``workers`` that compute ``rec``'s class (choosing it if unset).

        Workers that advertise no class (a local cluster, the operator's own processes) are
        one class: this process's. A unit's class is fixed by its first replica, so that its
        replicas are only ever compared within one class.
        """
        offered = {
            a: {c for c in self.classes_of.get(a, ()) if self.allowed_class(c)} for a in workers
        }
        if not any(offered.values()):
            return workers
        cls = rec.get("class")
        if cls is None:
            cls = self.choose_class(rec, offered)
            rec["class"] = cls
        return [a for a in workers if cls in offered[a]]

    def choose_class(self, rec: dict, offered: dict[str, set[str]]) -> str:
        """The class a new unit is computed in: this process's own (the fastest runtime
        installed) while enough of its volunteers are idle for a quorum, else the class with
        the most idle volunteers, so that volunteers of every class are used."""
        need = 1 if rec.get("single") else self.quorum
        load = self.in_flight()
        counts: dict[str, int] = {}
        idle: dict[str, int] = {}
        for addr, classes in offered.items():
            for c in classes:
                counts[c] = counts.get(c, 0) + 1
                idle[c] = idle.get(c, 0) + (load.get(addr, 0) == 0)
        able = [c for c in counts if counts[c] >= need] or list(counts)
        mine = self.model.numerical_class
        if mine in able and idle.get(mine, 0) >= need:
            return mine
        return max(sorted(able), key=lambda c: (idle.get(c, 0), c == mine, counts[c]))

    def min_cosine(self, rec: dict) -> float:
        """Agreement threshold of ``rec``: the run's, or its class's calibration if looser."""
        cls = rec.get("class")
        if not cls:
            return self.cfg.min_cosine
        from embeddings import class_min_cosine

        return min(self.cfg.min_cosine, class_min_cosine(cls))

    def eligible_any(self, rec: dict) -> bool:
        """Whether a connected volunteer could still take ``rec`` (ignoring revocations)."""
        used = self.used_workers(rec)
        accounts = {self.account(n) for n in used}
        return any(n not in used and self.account(n) not in accounts for n in self.names.values())

    def plan(self, rec: dict) -> None:
        """Submit what ``rec`` still needs (nothing when accepted, disputed or busy)."""
        if rec["state"] != UnitState.PENDING or not self.names:
            return
        required = self.required(rec)
        if self.best_group(rec) >= required:
            return
        if self.counted(rec) >= self.cfg.max_replicas:
            rec["state"] = UnitState.DISPUTED
            self.save(rec)
            self.emit("disputed", rec["unit_key"])
            return
        running = self.running(rec)
        if not rec["replicas"] and self.quorum > 1:
            trusted = [
                a for a, n in self.names.items() if self.trusted(n) and not self.is_revoked(n)
            ]
            if trusted and self.rng.random() >= self.cfg.spot_check_rate:
                rec["single"] = True  # adaptive replication: one trusted result suffices
                self.submit(rec, workers=self.pick(self.in_class(rec, trusted)))
                self.maybe_canary(trusted)
                return
        # a full quorum is placed at once, each replica on a volunteer the operator picks
        need = required - self.best_group(rec) - running
        for _ in range(max(need, 0)):
            if self.local and self.quorum == 1:
                self.submit(rec, workers=None)
                return
            candidates = self.in_class(rec, self.eligible(rec))
            if not candidates:
                if not self.running(rec) and self.counted(rec) and not self.eligible_any(rec):
                    rec["state"] = UnitState.DISPUTED  # every volunteer here has had it
                    self.save(rec)
                    self.emit("disputed", rec["unit_key"])
                return
            self.submit(rec, workers=self.pick(candidates))

    def maybe_canary(self, trusted: list[str]) -> None:
        """Now and then, send an already-accepted unit (a known answer) to a trusted volunteer.

        A canary is submitted exactly like a replica (same task, same kind of key and spec), so
        a volunteer cannot tell it from real work.
        """
        if not self.accepted_keys or self.rng.random() >= self.cfg.canary_rate:
            return
        key = self.rng.choice(self.accepted_keys)
        rec = self.units.get(key) or self.load(self.ts.unit(key))
        in_class = self.in_class(rec, trusted)
        if in_class:
            self.submit(rec, workers=self.pick(in_class), kind="canary")
            self.report.canaries_run += 1

    def required(self, rec: dict) -> int:
        """Agreeing volunteers that accept ``rec``: 1 for a trusted single, the quorum, and
        ``dispute_margin`` more once its replicas have disagreed, so that two colluders who meet
        an honest volunteer on a unit cannot outvote it (they win only a unit they are given
        both replicas of)."""
        if rec["single"]:
            return 1
        disputed = any(
            r["status"] == ReplicaStatus.INVALID and str(r.get("reason", "")).startswith("mismatch")
            for r in rec["replicas"].values()
        )
        if not disputed:
            groups = {frozenset(o for o, _ in g) for _, g, _ in self.groups(rec)}
            disputed = len(groups) > 1
        extra = self.cfg.dispute_margin if disputed and self.quorum > 1 else 0
        return min(self.quorum + extra, self.cfg.max_replicas)
