"""Export of result tables: astropy Table, parquet, VOTable, CSV, ECSV, FITS, JSON.

Every writer reads the column definitions of :mod:`catalog._columns`:

- VOTable (1.4): one FIELD per column with its unit, UCD and DESCRIPTION, a COOSYS (ICRS)
  that ``ra``/``dec`` refer to, ``date_obs`` as ISO text with ``xtype="timestamp"``, unknown text
  as null, and one INFO per entry of the table's ``meta`` (the query, the catalogue, its version,
  tree size and Merkle root);
- parquet: typed columns (``date_obs`` as ``date32``, unknown text as null), the unit, UCD and
  description in each field's metadata and the table's ``meta`` as JSON under the schema key
  ``hubcat``;
- CSV, ECSV, FITS, JSON through astropy / pandas, units and descriptions where the format has them.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.table import MaskedColumn, Table

from catalog._columns import NULLABLE_TEXT, column_def
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
    """Serialise ``table`` in export format ``fmt`` (see :data:`EXPORT_FORMATS`).

    Parameters
    ----------
    table : astropy.table.Table
        A result table (:func:`result_table`), with its ``meta``.
    fmt : str
        One of :data:`EXPORT_FORMATS` (``"json"``, ``"votable"``, ``"parquet"``, ``"csv"``,
        ``"ecsv"``, ``"fits"``).

    Returns
    -------
    bytes
        The serialised table; JSON is ``{"meta": ..., "rows": [...]}`` with unknown text as
        null, text formats UTF-8.

    Raises
    ------
    QueryError
        ``fmt`` is not an export format.
    """
    fmt = _format_of("", fmt)
    clean = _clean(table)
    if fmt == "json":
        frame = clean.to_pandas()
        for name in frame.columns:  # unknown text is null, as NaN already is
            if name in NULLABLE_TEXT and pd.api.types.is_string_dtype(frame[name]):
                frame[name] = frame[name].astype(object).where(frame[name].str.strip() != "", None)
        rows = json.loads(frame.to_json(orient="records"))
        return (json.dumps({"meta": clean.meta, "rows": rows}, indent=1) + "\n").encode()
    if fmt == "votable":
        return _votable_bytes(clean)
    if fmt == "parquet":
        return _parquet_bytes(clean)
    if fmt in ("csv", "ecsv"):
        buf = io.StringIO()
        clean.write(buf, format=_ASTROPY_FORMAT[fmt])
        return buf.getvalue().encode()
    with tempfile.TemporaryDirectory() as tmp:  # the FITS writer wants a file name
        path = Path(tmp) / f"table.{fmt}"
        for name in clean.colnames:
            if clean[name].dtype.kind == "U":
                clean[name] = np.char.encode(clean[name].astype(str), "utf-8")
        with warnings.catch_warnings():
            # long meta keys become standard HIERARCH cards in FITS; nothing is lost
            warnings.filterwarnings("ignore", message=".*HIERARCH card will be created.*")
            clean.write(path, format=_ASTROPY_FORMAT[fmt])
        return path.read_bytes()


def _is_null_text(name: str, values: np.ndarray) -> np.ndarray:
    if name not in NULLABLE_TEXT or values.dtype.kind not in "US":
        return np.zeros(len(values), dtype=bool)
    return np.char.strip(values.astype(str)) == ""


def _votable_bytes(table: Table) -> bytes:
    from astropy.io.votable.tree import CooSys, Info, VOTableFile

    out = Table(table, copy=True, masked=False)
    for name in out.colnames:
        null = _is_null_text(name, np.asarray(out[name]))
        if null.any():
            out[name] = MaskedColumn(out[name], mask=null)
        definition = column_def(name)
        if definition is not None and definition.kind == "date":
            out[name].meta["xtype"] = "timestamp"
    votable = VOTableFile.from_table(out)
    votable.version = "1.4"
    resource = votable.resources[0]
    coosys = CooSys(ID="icrs", system="ICRS", config=votable._config)
    resource.coordinate_systems.append(coosys)
    vot_table = resource.tables[0]
    vot_table.name = "results"
    for field in vot_table.fields:
        definition = column_def(field.name)
        if definition is not None and definition.name in ("ra", "dec"):
            field.ref = "icrs"
        if field.datatype == "unicodeChar":
            field.datatype = "char"  # VOTable char is ASCII; non-ASCII text stays unicodeChar
            if not all(str(v).isascii() for v in np.asarray(out[field.name])):
                field.datatype = "unicodeChar"
    for key, value in table.meta.items():
        vot_table.infos.append(Info(name=_info_name(key), value=str(value)))
    buf = io.BytesIO()
    votable.to_xml(buf)
    return buf.getvalue()


def _info_name(key: str) -> str:
    """An INFO name (an XML token without spaces)."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in key) or "meta"


def _parquet_bytes(table: Table) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays, fields = [], []
    # astropy's own parquet reader sizes its string columns from these keys
    schema_meta = {"hubcat": json.dumps(table.meta, sort_keys=True)}
    for name in table.colnames:
        col = table[name]
        values = np.asarray(col)
        definition = column_def(name)
        kind = definition.kind if definition is not None else None
        if kind == "date":
            text = values.astype(str)
            dates = pd.to_datetime(pd.Series(text).str.strip(), errors="coerce", format="ISO8601")
            array = pa.array(dates.dt.date.where(dates.notna(), None), type=pa.date32())
        elif values.dtype.kind in "US":
            null = _is_null_text(name, values)
            array = pa.array(values.astype(str).tolist(), type=pa.string(), mask=null)
            schema_meta[f"table::len::{name}"] = str(max(1, values.dtype.itemsize // 4))
        else:
            array = pa.array(values, from_pandas=True)  # NaN (unknown) becomes null
        meta = {}
        unit = col.unit.to_string(format="vounit") if col.unit is not None else ""
        if definition is not None and definition.unit and col.unit == u.Unit(definition.unit):
            unit = definition.unit  # as written in the definition ("arcsec/pix")
        if unit:
            meta["unit"] = unit
        if definition is not None:
            meta["ucd"] = definition.ucd
        description = col.description or (definition.description if definition else "")
        if description:
            meta["description"] = description
        arrays.append(array)
        fields.append(pa.field(name, array.type, nullable=True, metadata=meta or None))
    schema = pa.schema(fields, metadata=schema_meta)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), buf)
    return buf.getvalue()


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
    from hubcat.storage import is_remote_uri, open_object_store

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
