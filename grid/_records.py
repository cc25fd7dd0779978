"""Unit state on disk: one JSON record per work unit, so a restarted operator resumes."""

from __future__ import annotations

import json
from enum import StrEnum
from urllib.parse import quote

from hubcat.errors import StoreNotFoundError
from hubcat.storage import ObjectStore

__all__ = ["ReplicaStatus", "UnitRecords", "UnitState", "slug"]


class UnitState(StrEnum):
    """Where a unit is: waiting for a quorum, accepted, or out of replicas."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    DISPUTED = "disputed"


class ReplicaStatus(StrEnum):
    """What became of one replica."""

    RUNNING = "running"
    VALID = "valid"
    INVALID = "invalid"
    FAILED = "failed"
    LOST = "lost"


STATES = tuple(s.value for s in UnitState)


def slug(unit_key: str) -> str:
    """A file-name-safe form of a unit key."""
    return quote(unit_key, safe="")


class UnitRecords:
    """Records ``units/<slug>.json`` under ``store`` (``grid/<model digest>/`` of the tile store).

    A record is a dict: ``unit_key``, ``tile_ids``, ``state`` (``pending``, ``accepted`` or
    ``disputed``), ``replicas`` (``{replica_id: {worker, status, reason, sha256, kind}}``, status
    one of ``running``, ``valid``, ``invalid``, ``failed``, ``lost``) and ``accepted``
    (``{replica, sha256, volunteers, single}`` once accepted).
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def get(self, unit_key: str) -> dict | None:
        try:
            return json.loads(self.store.get(f"units/{slug(unit_key)}.json"))
        except StoreNotFoundError:
            return None

    def put(self, record: dict) -> None:
        data = json.dumps(record, sort_keys=True, indent=1).encode()
        self.store.put(f"units/{slug(record['unit_key'])}.json", data)

    def all(self) -> list[dict]:
        out = []
        for key in self.store.list("units/"):
            if key.endswith(".json"):
                out.append(json.loads(self.store.get(key)))
        return out

    def counts(self) -> dict[str, int]:
        """Number of units per state."""
        counts = dict.fromkeys(STATES, 0)
        for rec in self.all():
            counts[rec.get("state", "pending")] = counts.get(rec.get("state", "pending"), 0) + 1
        return counts
