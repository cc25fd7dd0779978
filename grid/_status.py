"""``hubcat grid status``: volunteers, units done/pending/disputed, credit."""

from __future__ import annotations

import json

from grid._ledger import CreditLedger
from grid._records import GridArea
from grid.errors import GridError
from hubcat.errors import KeyFileError
from hubcat.keys import read_ed25519_public_pem

__all__ = ["grid_status", "render_status"]


def ledger_public_key(grid_dir=None, public_key=None):
    """The public key that ledger entries must verify against.

    ``public_key`` (a PEM file) when given, else the grid directory's ``ledger.pub``, else the
    public half of :func:`grid.default_ledger_key` (``None`` when there is none).
    """
    from pathlib import Path

    from grid._ledger import default_ledger_key

    if public_key is not None and not isinstance(public_key, (str, Path)):
        return public_key
    if public_key is not None:
        path = Path(public_key).expanduser()
    elif grid_dir is not None:
        path = Path(grid_dir).expanduser() / "ledger.pub"
    else:
        path = default_ledger_key().with_suffix(".pub")
    if not path.exists():
        if public_key is not None:
            msg = f"ledger public key {path} does not exist"
            raise GridError(msg)
        return None
    try:
        return read_ed25519_public_pem(path.read_bytes(), f"ledger public key {path}")
    except KeyFileError as exc:
        raise GridError(str(exc)) from None


def grid_status(tile_store_uri, *, grid_dir=None, public_key=None) -> dict:
    """Status of the grid runs recorded in a tile store.

    Parameters
    ----------
    tile_store_uri : str or path-like or TileStore
    grid_dir : path-like or None
        Grid directory; when given, enrolment (expiry, revoked) is listed too, and the ledger
        is verified against its ``ledger.pub``.
    public_key : path-like or None
        PEM public key of the operator's ledger key (overrides the grid directory's).

    Returns
    -------
    dict
        ``units`` (per model digest: total, accepted, pending, disputed), ``volunteers``
        (per name, from signed entries only: valid, invalid, tiles, credit, streak,
        enrolment), ``ledger_ok`` and ``ledger`` (entries, verified, ``unsigned``: the
        sequence numbers of entries that do not verify, ``broken_at``).
    """
    from hubcat.storage import open_object_store

    uri = getattr(tile_store_uri, "uri", tile_store_uri)
    base = open_object_store(str(uri))
    total = None
    try:
        from tiling import TileStore

        total = len(TileStore.open(str(uri)).units())
    except Exception:
        total = None
    units = {}
    area = GridArea(base)
    for digest in area.model_digests():
        counts = area.records(digest).counts()
        done = counts.get("accepted", 0)
        counts["total"] = total if total is not None else sum(counts.values())
        counts["pending"] = counts["total"] - done - counts.get("disputed", 0)
        units[digest] = counts
    ledger = CreditLedger(area.ledger_store(), public_key=ledger_public_key(grid_dir, public_key))
    check = ledger.check()
    ok = check.ok
    vols = {name: s.as_dict() for name, s in ledger.summary().items()}
    if grid_dir is not None:
        from grid._pki import GridAuthority

        for name, entry in GridAuthority.open(grid_dir).register()["volunteers"].items():
            vols.setdefault(
                name,
                {"name": name, "valid": 0, "invalid": 0, "tiles": 0, "credit": 0.0, "streak": 0},
            )
            vols[name]["not_after"] = entry["not_after"]
            vols[name]["revoked"] = entry["revoked"]
    return {
        "tile_store": str(uri),
        "units": units,
        "volunteers": vols,
        "ledger_ok": ok,
        "ledger": check.as_dict(),
    }


def render_status(status: dict) -> None:
    """Print :func:`grid_status` as tables.

    Parameters
    ----------
    status : dict
        As :func:`grid_status` returns it: units per model digest, volunteers, ledger check.
    """
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"work units in {status['tile_store']}")
    for col in ("model digest", "total", "accepted", "pending", "disputed"):
        t.add_column(col)
    for digest, c in status["units"].items():
        t.add_row(
            digest[:16], *(str(c.get(k, 0)) for k in ("total", "accepted", "pending", "disputed"))
        )
    console.print(t)
    v = Table(title="volunteers (credit in cobblestones, granted only after validation)")
    for col in ("volunteer", "valid", "invalid", "tiles", "credit", "trust streak", "certificate"):
        v.add_column(col)
    for name, s in sorted(status["volunteers"].items()):
        cert = (
            "revoked"
            if s.get("revoked")
            else (f"until {s['not_after'][:10]}" if "not_after" in s else "")
        )
        v.add_row(
            name,
            str(s["valid"]),
            str(s["invalid"]),
            str(s["tiles"]),
            f"{s['credit']:.4f}",
            str(s["streak"]),
            cert,
        )
    console.print(v)
    led = status.get("ledger") or {}
    if status["ledger_ok"]:
        console.print(f"ledger: {led.get('verified', 0)} entries, every signature verifies")
    else:
        unsigned = led.get("unsigned") or []
        shown = ", ".join(str(i) for i in unsigned[:20]) + (" ..." if len(unsigned) > 20 else "")
        if unsigned:
            console.print(f"ledger: entries NOT signed by the operator (not counted): {shown}")
        if led.get("broken_at") is not None:
            console.print(f"ledger: chain broken at entry {led['broken_at']} (removed entries)")


def _dumps(obj) -> str:
    return json.dumps(obj, indent=1, default=str)
