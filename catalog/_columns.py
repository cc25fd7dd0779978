"""The columns of hubcat's result tables: one definition that every exporter reads.

Each column has a name, a storage type, a unit (VOUnit string, ``""`` for none), an IVOA UCD
(UCD1+, https://www.ivoa.net/documents/UCD1+/) and a description. :func:`catalog._query.result_table`
builds astropy tables from it (units, ``description`` and ``meta["ucd"]`` on every column) and
:mod:`catalog._export` writes them: VOTable FIELDs with their UCDs and DESCRIPTIONs, parquet
fields with typed values (``date_obs`` as ``date32``, unknown text as null) and the unit, UCD and
description in each field's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COLUMNS", "NULLABLE_TEXT", "ColumnDef", "column_def"]


@dataclass(frozen=True)
class ColumnDef:
    """One column of a result table.

    Attributes
    ----------
    name : str
        Column name.
    kind : str
        Storage type: ``"str"``, ``"float64"``, ``"int64"`` or ``"date"`` (an ISO calendar date;
        ``date32`` in parquet, text with ``xtype="timestamp"`` in VOTable).
    unit : str
        VOUnit string (``"deg"``, ``"arcsec"``, ``"s"``, ``"arcsec/pix"``); ``""`` for none.
    ucd : str
        IVOA UCD1+ of the column.
    description : str
        What the column holds, for people.
    """

    name: str
    kind: str
    unit: str
    ucd: str
    description: str


#: Every column a result table can hold, in table order (the score columns are alternatives).
COLUMNS: tuple[ColumnDef, ...] = (
    ColumnDef(
        "tile_id",
        "str",
        "",
        "meta.id;meta.main",
        "Identifier of the tile: mosaic id, zoom and pixel box (unique in the catalogue)",
    ),
    ColumnDef(
        "similarity",
        "float64",
        "",
        "stat.correlation",
        "Cosine similarity of the tile's embedding to the query's (1 is identical)",
    ),
    ColumnDef(
        "separation",
        "float64",
        "arcsec",
        "pos.angDistance",
        "Angular distance of the tile centre from the cone centre",
    ),
    ColumnDef(
        "anomaly",
        "float64",
        "",
        "stat.value",
        "Anomaly score, 1 minus the cosine similarity to the k-th nearest other tile (0 to 2)",
    ),
    ColumnDef(
        "ra", "float64", "deg", "pos.eq.ra;meta.main", "Right ascension of the tile centre (ICRS)"
    ),
    ColumnDef(
        "dec", "float64", "deg", "pos.eq.dec;meta.main", "Declination of the tile centre (ICRS)"
    ),
    ColumnDef(
        "zoom",
        "int64",
        "",
        "arith.factor;instr.pixel",
        "Binning factor of the tile's pixels (1 is the mosaic's own pixels)",
    ),
    ColumnDef("instrument", "str", "", "meta.id;instr", "HST instrument (INSTRUME)"),
    ColumnDef("filter", "str", "", "meta.id;instr.filter", "Filter(s) in the beam ('+'-joined)"),
    ColumnDef(
        "date_obs",
        "date",
        "",
        "time.start;obs.exposure",
        "UTC date of the start of the observation (DATE-OBS or EXPSTART)",
    ),
    ColumnDef(
        "source", "str", "", "meta.ref.uri", "Path or URI of the mosaic the tile was cut from"
    ),
    ColumnDef("proposal_id", "str", "", "meta.id;obs.proposal", "HST proposal id (PROPOSID)"),
    ColumnDef("detector", "str", "", "meta.id;instr.det", "Detector (DETECTOR)"),
    ColumnDef(
        "exptime",
        "float64",
        "s",
        "time.duration;obs.exposure",
        "Exposure time of the mosaic (EXPTIME)",
    ),
    ColumnDef("bunit", "str", "", "meta.unit", "Unit of the mosaic's pixel values (BUNIT)"),
    ColumnDef(
        "pixel_scale",
        "float64",
        "arcsec/pix",
        "instr.scale",
        "Size of one pixel of the tile on the sky (after binning)",
    ),
    ColumnDef("mosaic_id", "str", "", "meta.id;meta.dataset", "Identifier of the source mosaic"),
    ColumnDef(
        "row",
        "int64",
        "",
        "meta.record",
        "Row of the tile in the catalogue (its Merkle leaf index)",
    ),
)

_BY_NAME = {c.name: c for c in COLUMNS}

#: Text columns where an empty value means unknown: null in every export.
NULLABLE_TEXT: frozenset[str] = frozenset(
    {"instrument", "filter", "date_obs", "proposal_id", "detector", "bunit", "mosaic_id"}
)


def column_def(name: str) -> ColumnDef | None:
    """The definition of column ``name``, or None for a column hubcat does not define."""
    return _BY_NAME.get(name)
