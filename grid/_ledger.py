"""Append-only credit ledger, written only by the validator in the operator's process.

Each entry is one JSON object ``ledger/<seq>.json`` holding the sha256 of the previous entry
and an Ed25519 signature, by the operator's ledger key, of its canonical JSON. Anyone can write
files into a folder; nobody but the operator can sign, so trust, credit and the volunteers'
summary count **only entries whose signature verifies** against the operator's public key, and
:meth:`CreditLedger.verify` names every entry that does not (forged, edited, or signed by
another key) as well as a broken chain. Entries record valid results (with credit), invalid
results (no credit; they reset trust) and credit revoked from a volunteer later caught lying.

Credit is BOINC's *cobblestone*: 200 credits per day of a 1 GFLOP/s machine, i.e.
``credit = tiles * 8 augmentations * FLOP per forward pass * 200 / 86400e9``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from grid.errors import GridError
from hubcat.errors import KeyFileError
from hubcat.keys import read_ed25519_private_pem
from hubcat.storage import ObjectStore

__all__ = [
    "CreditLedger",
    "LedgerReport",
    "VolunteerSummary",
    "cobblestones",
    "default_ledger_key",
    "load_ledger_key",
]

AUGMENTATIONS_PER_TILE = 8
GENESIS = "0" * 64


def cobblestones(tiles: int, flop_per_forward: float) -> float:
    """Credit for embedding ``tiles`` tiles (8 augmentations each), in cobblestones.

    Parameters
    ----------
    tiles : int
        Tiles embedded.
    flop_per_forward : float
        Floating-point operations of one forward pass of the network on one tile.

    Returns
    -------
    float
        Cobblestones: 200 per day of a 1 GFLOP/s machine.
    """
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
        """The summary as a JSON-ready dict.

        Returns
        -------
        dict
            Every field.
        """
        return dict(self.__dict__)


@dataclass
class LedgerReport:
    """What :meth:`CreditLedger.verify` found.

    Attributes
    ----------
    entries : int
        Entries in the folder.
    verified : int
        Entries whose signature verifies against the operator's public key.
    unsigned : list of int
        Sequence numbers of entries with no valid signature (forged, edited or foreign).
    broken_at : int or None
        First sequence number where the hash chain breaks (an entry removed or re-ordered).
    """

    entries: int = 0
    verified: int = 0
    unsigned: list[int] = field(default_factory=list)
    broken_at: int | None = None

    @property
    def ok(self) -> bool:
        return not self.unsigned and self.broken_at is None

    def as_dict(self) -> dict:
        """The report as a JSON-ready dict.

        Returns
        -------
        dict
            Every field plus ``ok``.
        """
        return {**self.__dict__, "ok": self.ok}


def default_ledger_key() -> Path:
    """The ledger key of runs without a grid directory.

    ``$HUBCAT_LEDGER_KEY`` when set, else ``~/.hubcat/ledger.key`` (made on first use).

    Returns
    -------
    Path
        The key file's path (``~`` expanded); this function does not create it.
    """
    env = os.environ.get("HUBCAT_LEDGER_KEY")
    return Path(env).expanduser() if env else Path("~/.hubcat/ledger.key").expanduser()


def load_ledger_key(path: str | os.PathLike[str] | None = None, *, create: bool = True):
    """The operator's Ed25519 ledger key (PEM), made on first use when ``create``.

    Parameters
    ----------
    path : path-like or None
        Key file (default :func:`default_ledger_key`); the public key is ``*.pub`` beside it.
    create : bool
        Make a new key pair when the file does not exist.

    Returns
    -------
    cryptography.hazmat.primitives.asymmetric.ed25519.Ed25519PrivateKey

    Raises
    ------
    GridError
        If the file is missing (and ``create`` is false) or is not an Ed25519 private key.
    """
    from grid._pki import _write_ed25519

    path = Path(path).expanduser() if path is not None else default_ledger_key()
    if not path.exists():
        if not create:
            msg = f"ledger key {path} does not exist; it is made by `hubcat grid init`"
            raise GridError(msg)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_ed25519(path, path.with_suffix(".pub"))
    try:
        return read_ed25519_private_pem(path.read_bytes(), f"ledger key {path}")
    except KeyFileError as exc:
        raise GridError(str(exc)) from None


class CreditLedger:
    """The credit ledger under ``store`` (usually ``grid/ledger`` of the tile store).

    Parameters
    ----------
    store : ObjectStore
        Folder of the ledger's entries.
    signing_key : Ed25519PrivateKey or None
        The operator's ledger key; needed to append. Its public key verifies.
    public_key : Ed25519PublicKey or None
        Verifies entries when there is no signing key (``hubcat grid status``). With neither,
        no entry verifies and every summary is empty.
    """

    def __init__(self, store: ObjectStore, signing_key=None, public_key=None) -> None:
        self.store = store
        self.signing_key = signing_key
        self.public_key = public_key or (signing_key.public_key() if signing_key else None)
        self._entries: list[dict] | None = None

    def entries(self) -> list[dict]:
        """Every entry in the folder, in order, signed or not (see :meth:`verified_entries`).

        Returns
        -------
        list of dict
            Entries sorted by key (sequence number); an unreadable object becomes
            ``{"seq": -1, ..., "unreadable": key}``. Read once, then cached.
        """
        if self._entries is None:
            keys = sorted(k for k in self.store.list() if k.endswith(".json"))
            out = []
            for k in keys:
                try:
                    entry = json.loads(self.store.get(k))
                except ValueError:
                    entry = {"seq": -1, "volunteer": "?", "event": "?", "unreadable": k}
                out.append(entry if isinstance(entry, dict) else {"seq": -1, "unreadable": k})
            self._entries = out
        return list(self._entries)

    def signed(self, entry: dict) -> bool:
        """Whether ``entry`` carries a valid signature of the operator's ledger key.

        Parameters
        ----------
        entry : dict
            A ledger entry as stored (with ``hash`` and base64 ``sig``).

        Returns
        -------
        bool
            True only if the Ed25519 signature over the entry's body verifies and its ``hash``
            matches its contents; False without a public key.
        """
        from cryptography.exceptions import InvalidSignature

        if self.public_key is None or not isinstance(entry.get("sig"), str):
            return False
        try:
            sig = base64.b64decode(entry["sig"], validate=True)
            self.public_key.verify(sig, _canonical(entry_body(entry)))
        except (InvalidSignature, ValueError, TypeError):
            return False
        return entry.get("hash") == _hash(entry)

    def verified_entries(self) -> list[dict]:
        """The entries whose signature verifies (the only ones that count).

        Returns
        -------
        list of dict
            Those :meth:`entries` for which :meth:`signed` is True, in order.
        """
        return [e for e in self.entries() if self.signed(e)]

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
        """Append one signed entry (``event`` is ``"valid"``, ``"invalid"`` or ``"revoked"``).

        Parameters
        ----------
        volunteer : str
            The volunteer's name (certificate CN).
        event : str
            ``"valid"``, ``"invalid"`` or ``"revoked"``.
        unit : str
            Key of the work unit concerned.
        tiles : int
            Tiles credited (``"valid"``) or withdrawn (``"revoked"``).
        credit : float
            Credit in cobblestones (see :func:`cobblestones`).
        reason : str
            Why, for ``"invalid"`` and ``"revoked"`` entries.
        model_digest : str
            Digest of the model the unit was embedded with.

        Returns
        -------
        dict
            The stored entry: the fields above plus ``seq``, ``time`` (Unix seconds), ``prev``
            (the previous entry's hash), ``hash`` and ``sig``.

        Raises
        ------
        GridError
            If the event is unknown or this ledger has no signing key.
        """
        if event not in ("valid", "invalid", "revoked"):
            msg = f"ledger event {event!r} is unknown; expected 'valid', 'invalid' or 'revoked'"
            raise GridError(msg)
        if self.signing_key is None:
            msg = "this credit ledger was opened without the operator's ledger key: it is read-only"
            raise GridError(msg)
        entries = self.entries()
        prev = entries[-1].get("hash", GENESIS) if entries else GENESIS
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
        entry["sig"] = base64.b64encode(
            self.signing_key.sign(_canonical(entry_body(entry)))
        ).decode()
        self.store.put(f"{entry['seq']:010d}.json", json.dumps(entry, sort_keys=True).encode())
        self._entries = [*entries, entry]
        return entry

    def check(self) -> LedgerReport:
        """Signatures and hash chain of every entry (re-read from the store).

        Returns
        -------
        LedgerReport
            Entry and verified counts, the indices of unsigned entries and the first index
            where the chain breaks (a removed or reordered entry), if any.
        """
        self._entries = None
        report = LedgerReport()
        prev = GENESIS
        for i, entry in enumerate(self.entries()):
            report.entries += 1
            if self.signed(entry):
                report.verified += 1
            else:
                report.unsigned.append(i)
            if report.broken_at is None and (
                entry.get("seq") != i or entry.get("prev") != prev or not entry.get("hash")
            ):
                report.broken_at = i
            prev = entry.get("hash", "")
        return report

    def verify(self) -> LedgerReport:
        """Check every signature and the hash chain.

        Returns
        -------
        LedgerReport

        Raises
        ------
        GridError
            If an entry is not signed by the operator's key (names them) or the chain is broken
            (an entry removed or re-ordered: names the first).
        """
        report = self.check()
        if report.unsigned:
            shown = ", ".join(str(i) for i in report.unsigned[:10])
            more = f" and {len(report.unsigned) - 10} more" if len(report.unsigned) > 10 else ""
            msg = (
                f"credit ledger {self.store.uri}: entries {shown}{more} are not signed by the "
                "operator's ledger key (forged or edited); they are not counted"
            )
            raise GridError(msg)
        if report.broken_at is not None:
            msg = (
                f"credit ledger {self.store.uri} is broken at entry {report.broken_at}: "
                "an entry was removed or re-ordered"
            )
            raise GridError(msg)
        return report

    def summary(self) -> dict[str, VolunteerSummary]:
        """Per-volunteer totals (valid, invalid, tiles, credit, current streak), from the
        entries whose signature verifies only.

        Returns
        -------
        dict of str to VolunteerSummary
            Keyed by volunteer name.
        """
        out: dict[str, VolunteerSummary] = defaultdict(lambda: VolunteerSummary(""))
        for e in self.verified_entries():
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
        """Consecutive valid results of ``volunteer`` since its last invalid one.

        Parameters
        ----------
        volunteer : str
            The volunteer's name.

        Returns
        -------
        int
            0 for an unknown volunteer.
        """
        s = self.summary().get(volunteer)
        return s.streak if s else 0

    def caught(self) -> set[str]:
        """Volunteers with at least one signed ``invalid`` entry.

        Returns
        -------
        set of str
            Volunteer names.
        """
        return {e["volunteer"] for e in self.verified_entries() if e.get("event") == "invalid"}


def entry_body(entry: dict) -> dict:
    """The signed part of an entry (everything but its signature)."""
    return {k: v for k, v in entry.items() if k != "sig"}


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _hash(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k not in ("hash", "sig")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
