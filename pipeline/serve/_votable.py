"""IVOA Simple Cone Search (SCS 1.03) responses: result VOTables with the required UCDs, and
error documents.

SCS 1.03 asks for exactly one column with each of the UCD1 words ``ID_MAIN`` (the tile id),
``POS_EQ_RA_MAIN`` and ``POS_EQ_DEC_MAIN`` (ICRS degrees, double), in the first table of the
first resource. An error is a VOTable holding ``<INFO name="Error" value="..."/>`` as a child of
``VOTABLE``, answered with HTTP 200 so that VO clients (pyvo, TOPCAT) read the message.
"""

from __future__ import annotations

import io

import numpy as np
from astropy.io.votable.tree import Field, Info, Resource, VOTableFile
from astropy.io.votable.tree import TableElement as VOTable

__all__ = ["SCS_COLUMNS", "result_votable", "scs_error", "scs_votable"]

#: SCS output columns: (name, datatype, unit, UCD1 word, description, minimum VERB level).
#: Columns without a UCD1 word of their own carry none.
SCS_COLUMNS: tuple[tuple[str, str, str | None, str | None, str, int], ...] = (
    ("tile_id", "char", None, "ID_MAIN", "hubcat tile identifier", 1),
    ("ra", "double", "deg", "POS_EQ_RA_MAIN", "right ascension of the tile centre (ICRS)", 1),
    ("dec", "double", "deg", "POS_EQ_DEC_MAIN", "declination of the tile centre (ICRS)", 1),
    ("separation", "double", "arcsec", "POS_ANG_DIST_GENERAL", "distance to the cone centre", 2),
    ("zoom", "int", None, None, "binning factor of the tile (1 = native pixels)", 2),
    ("instrument", "char", None, "INST_ID", "HST instrument", 2),
    ("filter", "char", None, "INST_FILTER_CODE", "HST filter", 2),
    ("date_obs", "char", None, "TIME_DATE", "observation date (ISO)", 2),
    ("pixel_scale", "double", "arcsec/pix", None, "pixel scale at this zoom", 3),
    ("proposal_id", "char", None, None, "HST proposal id", 3),
    ("source", "char", None, None, "mosaic the tile was cut from", 3),
)


def _write(votable: VOTableFile) -> bytes:
    # astropy's C TABLEDATA writer (astropy.io.votable.tablewriter) crashes the process when
    # threads write VOTables at once, even one at a time under a lock (astropy 8.0; it corrupts
    # memory that the garbage collector later walks). The service writes from several threads,
    # so it uses astropy's own pure-Python writer, which gives the same XML.
    buf = io.BytesIO()
    votable.to_xml(buf, _debug_python_based_parser=True)
    return buf.getvalue()


def result_votable(table) -> bytes:
    """A search result table as a VOTable (the astropy conversion, written thread-safely)."""
    from astropy.io.votable import from_table

    clean = table.copy(copy_data=False)
    clean.meta = {
        str(k): v for k, v in table.meta.items() if isinstance(v, str | int | float | bool)
    }
    return _write(from_table(clean))


def scs_votable(table, *, verb: int = 2, description: str = "") -> bytes:
    """The SCS VOTable of a cone-search result table (of :meth:`catalog.Catalogue.cone`).

    Parameters
    ----------
    table : astropy.table.Table
        Columns as :meth:`Catalogue.cone` returns them.
    verb : int
        SCS ``VERB``: 1 (id and position), 2 (and zoom, instrument, filter, date, separation)
        or 3 (every column).
    description : str
        Text of the resource's ``DESCRIPTION``.

    Returns
    -------
    bytes
        VOTable 1.4 XML (TABLEDATA).
    """
    votable = VOTableFile(version="1.4")
    resource = Resource(type="results")
    votable.resources.append(resource)
    if description:
        resource.description = description
    vtable = VOTable(votable, name="results")
    resource.tables.append(vtable)
    columns = [c for c in SCS_COLUMNS if c[5] <= verb]
    for name, datatype, unit, ucd, text, _ in columns:
        field = Field(
            votable,
            name=name,
            ID=name,
            datatype=datatype,
            unit=unit,
            ucd=ucd,
            arraysize="*" if datatype == "char" else None,
        )
        field.description = text
        vtable.fields.append(field)
    n = len(table)
    vtable.create_arrays(n)
    for name, datatype, *_ in columns:
        values = np.asarray(table[name])
        if datatype == "char":
            values = values.astype(str).astype(object)
        vtable.array[name] = values
    return _write(votable)


def scs_error(message: str) -> bytes:
    """An SCS error document: a VOTable whose only content is ``INFO name="Error"``."""
    votable = VOTableFile(version="1.4")
    votable.infos.append(Info(name="Error", ID="Error", value=message))
    return _write(votable)
