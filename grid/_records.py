"""What the grid keeps beside a tile store, and the unit records in it.

Layout, under the tile store's root (only :class:`GridArea` writes these paths)::

    grid/<model digest>/config.json          the grid configuration of the last run
    grid/<model digest>/units/<slug>.json    one record per work unit (:class:`UnitRecords`)
    grid/<model digest>/results/...          replicas' vectors and receipts (grid.ResultStore)
    grid/ledger/...                          the signed credit ledger (grid.CreditLedger)

A restarted operator resumes from the unit records.
"""

from __future__ import annotations

import json
from enum import StrEnum
from urllib.parse import quote

from hubcat.errors import StoreNotFoundError
from hubcat.storage import ObjectStore, open_object_store

__all__ = ["GridArea", "ReplicaStatus", "UnitRecords", "UnitState", "slug"]


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

    Parameters
    ----------
    store : ObjectStore
        The folder holding ``units/``.
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def get(self, unit_key: str) -> dict | None:
        """The record of one unit.

        Parameters
        ----------
        unit_key : str
            The work unit's key.

        Returns
        -------
        dict or None
            The record, or None when the unit has none yet.
        """
        try:
            return json.loads(self.store.get(f"units/{slug(unit_key)}.json"))
        except StoreNotFoundError:
            return None

    def put(self, record: dict) -> None:
        """Write (replace) a unit's record, atomically.

        Parameters
        ----------
        record : dict
            The record; its ``unit_key`` names the object.
        """
        data = json.dumps(record, sort_keys=True, indent=1).encode()
        self.store.put(f"units/{slug(record['unit_key'])}.json", data)

    def all(self) -> list[dict]:
        """Every unit's record.

        Returns
        -------
        list of dict
            In key order.
        """
        out = []
        for key in self.store.list("units/"):
            if key.endswith(".json"):
                out.append(json.loads(self.store.get(key)))
        return out

    def counts(self) -> dict[str, int]:
        """Number of units per state.

        Returns
        -------
        dict of str to int
            Every state (``pending``, ``accepted``, ``disputed``) with its count, 0 included.
        """
        counts = dict.fromkeys(STATES, 0)
        for rec in self.all():
            counts[rec.get("state", "pending")] = counts.get(rec.get("state", "pending"), 0) + 1
        return counts


class GridArea:
    """The ``grid/`` area beside a tile store: one folder per model digest, and the ledger.

    Parameters
    ----------
    tile_store : tiling.TileStore, ObjectStore or str
        The tile store (or its object store, or its URI) the grid works on.
    """

    LEDGER = "grid/ledger"

    def __init__(self, tile_store: object) -> None:
        if isinstance(tile_store, ObjectStore):
            self.base = tile_store
        else:
            self.base = open_object_store(str(getattr(tile_store, "uri", tile_store)))

    def run_root(self, model_digest: str) -> ObjectStore:
        """The folder of one model's runs: ``grid/<model digest>/``.

        Parameters
        ----------
        model_digest : str
            The model's digest (hex).

        Returns
        -------
        ObjectStore

        Raises
        ------
        ValueError
            If ``model_digest`` is empty or contains ``/``.
        """
        if not model_digest or "/" in model_digest:
            msg = f"a model digest names one folder, got {model_digest!r}"
            raise ValueError(msg)
        return self.base.child(f"grid/{model_digest}")

    def records(self, model_digest: str) -> UnitRecords:
        """The unit records of one model (``grid/<model digest>/units/``).

        Parameters
        ----------
        model_digest : str
            The model's digest (hex).

        Returns
        -------
        UnitRecords

        Raises
        ------
        ValueError
            As :meth:`run_root`.
        """
        return UnitRecords(self.run_root(model_digest))

    def ledger_store(self) -> ObjectStore:
        """Where the signed credit ledger lives (``grid/ledger/``).

        Returns
        -------
        ObjectStore
        """
        return self.base.child(self.LEDGER)

    def model_digests(self) -> list[str]:
        """Digests of the models the grid has run units of, sorted.

        Returns
        -------
        list of str
            Folder names under ``grid/``, the ledger's excepted.
        """
        return sorted(
            {
                key.split("/")[1]
                for key in self.base.list("grid/")
                if key.count("/") >= 2 and not key.startswith(self.LEDGER + "/")
            }
        )
