"""Append-only credit ledger, written only by the validator in the operator's process.

Each entry is one JSON object ``ledger/<seq>.json`` holding the sha256 of the previous entry,
so removing or editing an entry breaks the chain (:meth:`CreditLedger.verify`). Entries record
valid results (with credit), invalid results (no credit; they reset trust) and credit revoked
from a volunteer later caught lying. Trust, credit and the volunteers' summary are all derived
from the ledger, so it is the single source of truth.

Credit is BOINC's *cobblestone*: 200 credits per day of a 1 GFLOP/s machine, i.e.
``credit = tiles * 8 augmentations * FLOP per forward pass * 200 / 86400e9``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass

from grid.errors import GridError
from tiling.storage import ObjectStore

__all__ = ["CreditLedger", "VolunteerSummary", "cobblestones"]

AUGMENTATIONS_PER_TILE = 8
GENESIS = "0" * 64


def cobblestones(tiles: int, flop_per_forward: float) -> float:
    """Credit for embedding ``tiles`` tiles (8 augmentations each), in cobblestones."""
    return tiles * AUGMENTATIONS_PER_TILE * flop_per_forward * 200.0 / 86400e9


@dataclass
class VolunteerSummary:
    """What the ledger says about one volunteer."""

    name: str
    valid: int = 0
    invalid: int = 0
    tiles: int = 0
    credit: float = 0.0
    streak: int = 0  # consecutive valid results since the last invalid one
    last_seen: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class CreditLedger:
    """The credit ledger under ``store`` (usually ``grid/ledger`` of the tile store).

    Parameters
    ----------
    store : ObjectStore
        Folder of the ledger's entries.
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._entries: list[dict] | None = None

    def entries(self) -> list[dict]:
        """Every entry, in order."""
        if self._entries is None:
            keys = sorted(k for k in self.store.list() if k.endswith(".json"))
            self._entries = [json.loads(self.store.get(k)) for k in keys]
        return list(self._entries)

    def append(
        self,
        volunteer: str,
        event: str,
        *,
        unit: str = "",
        tiles: int = 0,
        credit: float = 0.0,
        reason: str = "",
        model_digest: str = "",
    ) -> dict:
        """Append one entry (``event`` is ``"valid"``, ``"invalid"`` or ``"revoked"``)."""
        if event not in ("valid", "invalid", "revoked"):
            msg = f"ledger event {event!r} is unknown; expected 'valid', 'invalid' or 'revoked'"
            raise GridError(msg)
        entries = self.entries()
        prev = entries[-1]["hash"] if entries else GENESIS
        entry = {
            "seq": len(entries),
            "time": time.time(),
            "volunteer": volunteer,
            "event": event,
            "unit": unit,
            "tiles": int(tiles),
            "credit": float(credit),
            "reason": reason,
            "model_digest": model_digest,
            "prev": prev,
        }
        entry["hash"] = _hash(entry)
        self.store.put(f"{entry['seq']:010d}.json", json.dumps(entry, sort_keys=True).encode())
        self._entries = [*entries, entry]
        return entry

    def verify(self) -> None:
        """Check the hash chain.

        Raises
        ------
        GridError
            If an entry was edited, removed or re-ordered (names the first bad sequence number).
        """
        self._entries = None
        prev = GENESIS
        for i, entry in enumerate(self.entries()):
            body = {k: v for k, v in entry.items() if k != "hash"}
            if (
                entry.get("seq") != i
                or entry.get("prev") != prev
                or _hash(body) != entry.get("hash")
            ):
                msg = f"credit ledger {self.store.uri} is broken at entry {i}: it was edited or removed"
                raise GridError(msg)
            prev = entry["hash"]

    def summary(self) -> dict[str, VolunteerSummary]:
        """Per-volunteer totals (valid, invalid, tiles, credit, current streak)."""
        out: dict[str, VolunteerSummary] = defaultdict(lambda: VolunteerSummary(""))
        for e in self.entries():
            s = out[e["volunteer"]]
            s.name = e["volunteer"]
            s.last_seen = max(s.last_seen, e["time"])
            s.credit += e["credit"]
            if e["event"] == "valid":
                s.valid += 1
                s.tiles += e["tiles"]
                s.streak += 1
            elif e["event"] == "invalid":
                s.invalid += 1
                s.streak = 0
            elif e["event"] == "revoked":
                s.tiles -= e["tiles"]
        return dict(out)

    def streak(self, volunteer: str) -> int:
        """Consecutive valid results of ``volunteer`` since its last invalid one."""
        s = self.summary().get(volunteer)
        return s.streak if s else 0


def _hash(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
