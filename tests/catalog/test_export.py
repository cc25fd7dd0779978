"""Astronomy metadata in every exported table: UCDs, COOSYS, INFO, typed parquet columns."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io.votable import parse, validate
from astropy.table import Table

from catalog import export
from catalog._columns import COLUMNS, column_def
from catalog._export import table_to_bytes


@pytest.fixture(scope="module")
def results(cat):
    """A similarity result and a cone result of the shared catalogue."""
    meta = cat.metadata()
    tid = meta["tile_id"][0]
    centre = SkyCoord(meta["ra"][0] * u.deg, meta["dec"][0] * u.deg)
    return {"similar": cat.similar(tid, k=4), "cone": cat.cone(centre, 20 * u.arcsec)}


def test_every_column_has_a_valid_ucd():
    from astropy.io.votable.ucd import check_ucd

    for col in COLUMNS:
        assert check_ucd(col.ucd, check_controlled_vocabulary=True), col


@pytest.mark.parametrize("kind", ["similar", "cone"])
def test_votable_passes_the_astropy_validator_without_warnings(results, kind, tmp_path):
    data = table_to_bytes(results[kind], "votable")
    report = io.StringIO()
    assert validate(io.BytesIO(data), output=report) is True, report.getvalue()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any VOTable warning fails the test
        vot = parse(io.BytesIO(data), verify="exception")
    resource = vot.resources[0]
    assert [(c.ID, c.system) for c in resource.coordinate_systems] == [("icrs", "ICRS")]
    table = resource.tables[0]
    fields = {f.name: f for f in table.fields}
    assert fields["ra"].ucd == "pos.eq.ra;meta.main" and fields["ra"].ref == "icrs"
    assert fields["dec"].ucd == "pos.eq.dec;meta.main" and fields["dec"].ref == "icrs"
    assert fields["tile_id"].ucd == "meta.id;meta.main"
    assert str(fields["ra"].unit) == "deg"
    assert fields["date_obs"].xtype == "timestamp"
    for name, field in fields.items():
        assert field.ucd == column_def(name).ucd
        assert " ".join(field.description.split()) == column_def(name).description
    infos = {i.name: i.value for i in table.infos}
    assert {"query", "catalogue", "version", "tree_size", "merkle_root"} <= set(infos)
    cat_meta = results[kind].meta
    assert infos["merkle_root"] == cat_meta["merkle_root"] and len(infos["merkle_root"]) == 64
    assert int(infos["tree_size"]) == cat_meta["tree_size"] > 0
    # what export() writes is what table_to_bytes gives, and astropy reads it back
    path = export(results[kind], tmp_path / "hits.vot")
    back = Table.read(path, format="votable")
    assert list(back["tile_id"]) == list(results[kind]["tile_id"])
    assert back["ra"].unit == u.deg


def test_votable_unknown_text_is_null(cat):
    """VOTable's null for char is the empty cell; unknown text is written as that, never 'None'."""
    import xml.etree.ElementTree as ET

    res = cat.similar(cat.metadata()["tile_id"][0], k=len(cat))
    empty = np.asarray(res["bunit"]) == ""
    assert empty.any() and not empty.all(), (
        "the test data should mix mosaics with and without BUNIT"
    )
    root = ET.fromstring(table_to_bytes(res, "votable"))
    ns = {"v": root.tag.partition("}")[0].lstrip("{")}
    names = [f.get("name") for f in root.iterfind(".//v:FIELD", ns)]
    cells = [
        tr.findall("v:TD", ns)[names.index("bunit")].text
        for tr in root.iterfind(".//v:TABLEDATA/v:TR", ns)
    ]
    assert [c is None for c in cells] == list(empty)


def test_parquet_columns_are_typed_with_units_and_ucds(cat, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    res = cat.similar(cat.metadata()["tile_id"][0], k=len(cat))
    path = export(res, tmp_path / "hits.parquet")
    table = pq.read_table(path)
    schema = table.schema
    assert pa.types.is_date32(schema.field("date_obs").type)
    dates = table.column("date_obs").to_pylist()
    expected = [d or None for d in res["date_obs"]]
    assert [d.isoformat() if d else None for d in dates] == expected
    bunit = table.column("bunit").to_pylist()
    assert [b for b in bunit if b is None] and "" not in bunit  # unknown is null, never ''
    for name in ("ra", "dec", "pixel_scale", "tile_id"):
        field_meta = {k.decode(): v.decode() for k, v in schema.field(name).metadata.items()}
        assert field_meta["ucd"] == column_def(name).ucd
        assert field_meta["description"] == column_def(name).description
        if column_def(name).unit:
            assert field_meta["unit"] == column_def(name).unit
    assert pa.types.is_int64(schema.field("zoom").type)
    assert pa.types.is_float64(schema.field("ra").type)
    meta = json.loads(schema.metadata[b"hubcat"])
    assert meta["merkle_root"] == res.meta["merkle_root"]
    # pandas (pyarrow) reads it with real dates and missing values
    frame = table.to_pandas()
    assert frame["bunit"].isna().any()


def test_parquet_unparseable_date_is_null():
    import pandas as pd
    import pyarrow.parquet as pq

    from catalog._query import result_table

    meta = pd.DataFrame(
        {
            "tile_id": ["a", "b", "c"],
            "ra": [1.0, 2.0, 3.0],
            "dec": [0.0, 0.0, 0.0],
            "zoom": [1, 1, 2],
            "date_obs": ["2004-03-01", "", "not a date"],
        }
    )
    for name in ("instrument", "filter", "source", "proposal_id", "detector", "mosaic_id"):
        meta[name] = "x"
    table = result_table(meta, np.arange(3), None, "")
    back = pq.read_table(io.BytesIO(table_to_bytes(table, "parquet")))
    assert [str(d) if d else None for d in back.column("date_obs").to_pylist()] == [
        "2004-03-01",
        None,
        None,
    ]
    assert back.column("exptime").null_count == 3  # missing column: unknown, null


def test_json_export_writes_unknown_values_as_null(cat):
    res = cat.similar(cat.metadata()["tile_id"][0], k=len(cat))
    rows = json.loads(table_to_bytes(res, "json"))["rows"]
    empty = [b == "" for b in res["bunit"]]
    assert [r["bunit"] is None for r in rows] == empty and any(empty)
    assert all(r["tile_id"] for r in rows)
