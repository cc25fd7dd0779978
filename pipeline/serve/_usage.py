"""The usage ledger: every admitted request, its caller and its cost, hash-chained and signed.

The ledger is a JSON-lines file. Its first line is a header naming the format and the verifier
key (C2SP signed-note text, the same Ed25519 keys as catalogue checkpoints,
:mod:`catalog.provenance`). Each further line is one entry::

    {"seq": 7, "time": "2026-12-01T20:15:03.120Z", "day": "2026-12-01", "caller": "key:1f2e3d4c",
     "name": "alice", "route": "/api/similar/image", "kind": "image", "cost": 20, "status": 200,
     "ms": 412.5, "prev": "<sha256 of the previous line>", "sig": "<base64 Ed25519>"}

``prev`` chains each entry to the line before it (the header for the first), so removing,
reordering or editing a line breaks the chain; ``sig`` is the operator key's Ed25519 signature of
the entry without ``sig``, serialised as JSON with sorted keys and no spaces, so each entry is
attributable on its own. :func:`read_ledger` checks both and sums the usage per caller.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipeline.serve.errors import UsageLedgerError

__all__ = ["CallerUsage", "LedgerReport", "UsageLedger", "read_ledger"]

_FORMAT = "hubcat-usage-ledger"


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sha(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


@dataclass
class CallerUsage:
    """What one caller used: requests and units, in total and per request kind."""

    caller: str
    name: str = ""
    requests: int = 0
    units: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    first: str = ""
    last: str = ""


@dataclass
class LedgerReport:
    """Result of :func:`read_ledger`: verified entries summed per caller."""

    path: str
    key: str
    entries: int
    callers: dict[str, CallerUsage]

    def to_dict(self) -> dict:
        return {
            "ledger": self.path,
            "key": self.key,
            "entries": self.entries,
            "callers": {k: v.__dict__ for k, v in self.callers.items()},
        }


def _parse_header(line: bytes, path: Path) -> dict:
    try:
        header = json.loads(line)
        if header.get("format") != _FORMAT:
            raise ValueError(f"format {header.get('format')!r}")
        return header
    except ValueError as exc:
        msg = f"{path} is not a hubcat usage ledger (first line: {exc})"
        raise UsageLedgerError(msg) from None


def read_ledger(
    path: str | os.PathLike[str],
    public_key: object | None = None,
    *,
    day: str | None = None,
    caller: str | None = None,
) -> LedgerReport:
    """Verify the ledger at ``path`` and sum its usage per caller.

    Parameters
    ----------
    path : str or path-like
    public_key : str, path or catalog.provenance.VerifierKey, optional
        The operator's verifier key to trust (default: the one in the ledger's header, which
        proves only that the ledger is unchanged since it was written, not who wrote it).
    day : str, optional
        Only sum entries of this UTC day (``YYYY-MM-DD``); every entry is verified regardless.
    caller : str, optional
        Only sum this caller's entries (``key:<id>`` or ``anon:<address>``).

    Raises
    ------
    UsageLedgerError
        Unreadable file, a broken chain, a bad signature or a key other than ``public_key``,
        naming the line.
    """
    from catalog.provenance import load_verifier_key

    path = Path(path).expanduser()
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        msg = f"cannot read the usage ledger {path}: {exc}"
        raise UsageLedgerError(msg) from None
    if not lines:
        msg = f"usage ledger {path} is empty (no header line)"
        raise UsageLedgerError(msg)
    header = _parse_header(lines[0], path)
    try:
        key = load_verifier_key(header["key"])
    except Exception as exc:
        msg = f"usage ledger {path}: its header's key is not a verifier key ({exc})"
        raise UsageLedgerError(msg) from None
    if public_key is not None:
        trusted = load_verifier_key(public_key)
        if trusted.public != key.public:
            msg = (
                f"usage ledger {path} is signed by key {key.text!r}, not the trusted key "
                f"{trusted.text!r}"
            )
            raise UsageLedgerError(msg)
    callers: dict[str, CallerUsage] = {}
    prev, expect = _sha(lines[0]), 1
    for number, line in enumerate(lines[1:], start=2):
        where = f"usage ledger {path}, line {number}"
        try:
            entry = json.loads(line)
            sig = base64.b64decode(entry.pop("sig"), validate=True)
        except (ValueError, KeyError, TypeError) as exc:
            msg = f"{where} is not a signed ledger entry ({exc})"
            raise UsageLedgerError(msg) from None
        if entry.get("prev") != prev:
            msg = f"{where}: the chain is broken (an entry before it was removed, reordered or edited)"
            raise UsageLedgerError(msg)
        if entry.get("seq") != expect:
            msg = f"{where}: sequence number {entry.get('seq')!r}, expected {expect}"
            raise UsageLedgerError(msg)
        if not key.verify(_canonical(entry), sig):
            msg = f"{where}: its signature does not verify with key {key.text!r} (the entry was changed)"
            raise UsageLedgerError(msg)
        prev, expect = _sha(line), expect + 1
        if (day and entry["day"] != day) or (caller and entry["caller"] != caller):
            continue
        usage = callers.setdefault(
            entry["caller"], CallerUsage(entry["caller"], entry.get("name", ""))
        )
        usage.requests += 1
        usage.units += int(entry["cost"])
        usage.by_kind[entry["kind"]] = usage.by_kind.get(entry["kind"], 0) + int(entry["cost"])
        usage.first = usage.first or entry["time"]
        usage.last = entry["time"]
    return LedgerReport(str(path), key.text, len(lines) - 1, callers)


class UsageLedger:
    """The service's writer of the usage ledger at ``path``, signing with ``signing_key``.

    Opening an existing ledger checks that it was signed with the same key and continues its
    chain; :meth:`today` gives the units each caller has spent today, to seed the quotas.
    """

    def __init__(self, path: str | os.PathLike[str], signing_key) -> None:
        self.path = Path(path).expanduser()
        self._key = signing_key
        self._lock = threading.Lock()
        self._today: dict[str, int] = defaultdict(int)
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        if self.path.exists() and self.path.stat().st_size:
            report = read_ledger(self.path, signing_key.verifier)
            lines = self.path.read_bytes().splitlines()
            self._prev, self._seq = _sha(lines[-1]), len(lines) - 1
            for line in lines[1:]:
                entry = json.loads(line)
                if entry["day"] == today:
                    self._today[entry["caller"]] += int(entry["cost"])
            del report
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            header = _canonical(
                {
                    "format": _FORMAT,
                    "version": 1,
                    "key": signing_key.verifier.text,
                    "created": today,
                }
            )
            self.path.write_bytes(header + b"\n")
            self._prev, self._seq = _sha(header), 0
        self._fh = open(self.path, "ab")  # held open for the service's life

    def today(self) -> dict[str, int]:
        """Units per caller already recorded today (UTC), from the ledger as opened."""
        return dict(self._today)

    def record(
        self, *, caller: str, name: str, route: str, kind: str, cost: int, status: int, ms: float
    ) -> None:
        """Append one signed entry (thread-safe)."""
        now = time.time()
        stamp = datetime.fromtimestamp(now, UTC)
        with self._lock:
            entry = {
                "seq": self._seq + 1,
                "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
                "day": stamp.strftime("%Y-%m-%d"),
                "caller": caller,
                "name": name,
                "route": route,
                "kind": kind,
                "cost": int(cost),
                "status": int(status),
                "ms": round(float(ms), 3),
                "prev": self._prev,
            }
            entry["sig"] = base64.b64encode(self._key.sign(_canonical(entry))).decode()
            line = _canonical(entry)
            self._fh.write(line + b"\n")
            self._fh.flush()
            self._prev, self._seq = _sha(line), self._seq + 1

    def close(self) -> None:
        """Close the file (entries are flushed as they are written)."""
        with self._lock:
            self._fh.close()
