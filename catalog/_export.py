"""Export of result tables: astropy Table, parquet, VOTable, CSV, ECSV, FITS, JSON."""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from astropy.table import Table

from catalog.errors import QueryError

__all__ = ["EXPORT_FORMATS", "export", "table_to_bytes"]

#: Export format -> file suffixes recognised for it.
EXPORT_FORMATS: dict[str, tuple[str, ...]] = {
    "parquet": (".parquet", ".pq"),
    "votable": (".vot", ".votable", ".xml"),
    "csv": (".csv",),
    "ecsv": (".ecsv",),
    "fits": (".fits", ".fit"),
    "json": (".json",),
}

_ASTROPY_FORMAT = {
    "parquet": "parquet",
    "votable": "votable",
    "csv": "ascii.csv",
    "ecsv": "ascii.ecsv",
    "fits": "fits",
}


def _format_of(target: str, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in EXPORT_FORMATS:
            msg = f"unknown export format {fmt!r}; choose one of {sorted(EXPORT_FORMATS)}"
            raise QueryError(msg)
        return fmt
    lower = target.lower()
    for name, suffixes in EXPORT_FORMATS.items():
        if lower.endswith(suffixes):
            return name
    msg = f"cannot tell the export format of {target!r} from its suffix; pass format= one of {sorted(EXPORT_FORMATS)}"
    raise QueryError(msg)


def _clean(table: Table) -> Table:
    """A copy whose ``meta`` holds only scalars (what every writer can serialise)."""
    out = table.copy(copy_data=False)
    out.meta = {
        str(k): v
        for k, v in table.meta.items()
        if isinstance(v, str | int | float | bool) and v is not None
    }
    return out


def table_to_bytes(table: Table, fmt: str) -> bytes:
    """Serialise ``table`` in export format ``fmt`` (see :data:`EXPORT_FORMATS`)."""
    fmt = _format_of("", fmt)
    clean = _clean(table)
    if fmt == "json":
        frame = clean.to_pandas()
        rows = json.loads(frame.to_json(orient="records"))
        return (json.dumps({"meta": clean.meta, "rows": rows}, indent=1) + "\n").encode()
    if fmt in ("csv", "ecsv", "votable"):
        buf = io.BytesIO() if fmt == "votable" else io.StringIO()
        clean.write(buf, format=_ASTROPY_FORMAT[fmt])
        value = buf.getvalue()
        return value if isinstance(value, bytes) else value.encode()
    with tempfile.TemporaryDirectory() as tmp:  # parquet and FITS writers want a file name
        path = Path(tmp) / f"table.{fmt}"
        if fmt == "fits":
            for name in clean.colnames:
                if clean[name].dtype.kind == "U":
                    clean[name] = np.char.encode(clean[name].astype(str), "utf-8")
        with warnings.catch_warnings():
            # long meta keys become standard HIERARCH cards in FITS; nothing is lost
            warnings.filterwarnings("ignore", message=".*HIERARCH card will be created.*")
            clean.write(path, format=_ASTROPY_FORMAT[fmt])
        return path.read_bytes()


def export(table: Table, target: str | os.PathLike[str], format: str | None = None) -> str:
    """Write a result table to a local path or an object-store URI (``s3://...``).

    Parameters
    ----------
    table : astropy.table.Table
        A result of :meth:`catalog.Catalogue.similar`, ``cone`` or ``anomalies``.
    target : str or path-like
        Destination; the format comes from its suffix unless ``format`` is given.
    format : str, optional
        One of ``parquet``, ``votable``, ``csv``, ``ecsv``, ``fits``, ``json``.

    Returns
    -------
    str
        The destination written.

    Raises
    ------
    QueryError
        Unknown format.
    """
    from tiling.storage import is_remote_uri, open_object_store

    text = os.fspath(target)
    data = table_to_bytes(table, _format_of(text, format))
    if is_remote_uri(text):
        parent, _, name = text.rstrip("/").rpartition("/")
        open_object_store(parent).put(name, data)
    else:
        path = Path(text).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return text
