"""Catching a liar reaches back: every unit it won alone, in any run, is reopened.

:class:`ReachBack` is the part of :class:`grid._engine.Engine` that, when a volunteer's first
signed ``invalid`` entry is written (and at the start of every run, from the signed ledger),
withdraws the vectors of every unit accepted on that volunteer's word alone from the embedding
store, revokes their credit with a signed ``revoked`` entry, and plans them again with a full
quorum; the next catalogue version then supersedes their rows (:mod:`catalog._supersede`).
"""

from __future__ import annotations

import logging

from grid._ledger import cobblestones
from grid._records import ReplicaStatus, UnitState
from grid.errors import InvalidResultError

__all__ = ["ReachBack"]

logger = logging.getLogger("grid")


class ReachBack:
    """Reopening rules of the engine (mixed into :class:`grid._engine.Engine`)."""

    def resume(self, planned: list) -> None:
        """Load the planned units, and reopen what was accepted on a caught volunteer's word."""
        for unit in planned:
            rec = self.load(unit)
            if rec["state"] == UnitState.ACCEPTED:
                acc = rec["accepted"]
                try:
                    vec = self.replica_vectors(rec, acc["replica"])
                except InvalidResultError as exc:  # its stored result is gone or changed
                    logger.warning("unit %s is recomputed: %s", rec["unit_key"], exc)
                    rec["state"], rec["accepted"], rec["replicas"] = UnitState.PENDING, None, {}
                    self.save(rec)
                    continue
                self.emb.write(rec["unit_key"], rec["tile_ids"], vec, volunteers=acc["volunteers"])
                self.report.units_accepted += 1
                self.accepted_keys.append(rec["unit_key"])
            elif rec["state"] == UnitState.DISPUTED:
                rec["state"] = UnitState.PENDING  # a new run gives disputed units another chance
                rec["replicas"] = {}
        caught = self.ledger.caught()
        if caught:
            self.reopen_singles(caught)
        # known answers for canaries: every unit accepted by a full quorum, in any run
        for rec in self.records.all():
            acc = rec.get("accepted") or {}
            key = rec["unit_key"]
            if rec.get("state") == UnitState.ACCEPTED and not acc.get("single"):
                if key not in self.accepted_keys:
                    self.accepted_keys.append(key)

    def reopen_singles(self, names: set[str]) -> None:
        """Every unit ever accepted on the word of one of ``names`` alone, in any run, is
        reopened: its vectors leave the embedding store, its credit is revoked by a signed
        entry, and it is recomputed with a full quorum."""
        for rec in self.records.all():
            acc = rec.get("accepted") or {}
            if rec.get("state") != UnitState.ACCEPTED or not acc.get("single"):
                continue
            if not set(acc.get("volunteers") or ()) <= names:
                continue
            key = rec["unit_key"]
            if key in self.units:
                rec = self.units[key]
            else:
                unit = self.ts.unit(key)
                rec = self.load(unit)
            (name,) = acc["volunteers"]
            self.emb.revoke(key)
            self.ledger.append(
                name,
                "revoked",
                unit=key,
                tiles=len(rec["tile_ids"]),
                credit=-cobblestones(len(rec["tile_ids"]), self.cfg.flop_per_forward),
                reason="accepted on the word of a volunteer later caught",
                model_digest=self.model.digest,
            )
            if acc.get("replica") in rec["replicas"]:
                rec["replicas"][acc["replica"]]["status"] = ReplicaStatus.INVALID
            rec["state"], rec["accepted"], rec["single"] = UnitState.PENDING, None, False
            rec["reopened"] = rec.get("reopened", 0) + 1
            if key in self.accepted_keys:
                self.accepted_keys.remove(key)
                self.report.units_accepted -= 1
            self.report.units_reopened += 1
            self.save(rec)
            self.plan(rec)
