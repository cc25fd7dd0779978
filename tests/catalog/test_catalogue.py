"""Catalogue built from real HST tiles: contents, similarity, cone search, filters, versions."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from catalog import (
    RESULT_COLUMNS,
    CatalogError,
    CatalogNotFoundError,
    Catalogue,
    CatalogWarning,
    CorruptCatalogError,
    IncompatibleCatalogError,
    QueryError,
    UnknownTileError,
)
from catalog.provenance import RECORD_KEYS, verify_consistency


def test_manifest_and_contents(cat, stores):
    m = cat.manifest
    n_main = len(stores["main"][1].read_all()[0])
    n_ngc = len(stores["ngc"][1].read_all()[0])
    assert len(cat) == n_main + n_ngc == m["counts"]["tiles"]
    assert m["format"] == "hubcat-catalogue" and m["format_version"] == 1
    assert m["version"] == 2 and [v["tiles"] for v in m["versions"]] == [n_main, n_main + n_ngc]
    assert m["model"]["name"] == "tf_efficientnet_lite0" and m["model"]["dim"] == 1280
    assert m["weights_sha256"] == stores["main"][1].model_info()["weights_sha256"]
    assert m["preprocessing_digest"] == stores["main"][1].model_digest
    assert set(m["tiling_digests"]) == {stores["main"][0].digest, stores["ngc"][0].digest}
    assert m["index"]["type"] == "flat" and m["index"]["metric"] == "inner_product"
    assert m["provenance"]["tree_size"] == len(cat)
    assert m["versions"][-1]["merkle_root"] == m["provenance"]["root"]
    assert m["counts"]["mosaics"] == 3

    meta = cat.metadata()
    assert list(meta["leaf_index"]) == list(range(len(cat)))
    assert set(meta["source"].map(lambda s: s.rsplit("/", 1)[-1])) >= {
        "abell_2744_cd_galaxy_f105w.fits.gz",
        "mpdaf_HST-HDFS.fits",
        "drizzle_reference_square_image_acs-hrc_f606w_ngc104.fits",
    }
    vec = cat.vectors()
    assert vec.dtype == np.float32 and vec.shape == (len(cat), 1280)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    # the vectors are the embedding store's bytes, row for row
    ids, vectors, _vols = stores["main"][1].read_all()
    pos = {t: i for i, t in enumerate(ids)}
    for row in range(3):
        assert vec[row].tobytes() == vectors[pos[meta["tile_id"][row]]].tobytes()

    records = cat.records()
    assert len(records) == len(cat)
    for rec, (_, row), v in zip(records, meta.iterrows(), vec, strict=True):
        assert tuple(sorted(rec)) == tuple(sorted(RECORD_KEYS))
        assert rec["tile_id"] == row["tile_id"]
        assert rec["embedding_sha256"] == hashlib.sha256(v.astype("<f4").tobytes()).hexdigest()
        assert rec["box"] == [int(row["x0"]), int(row["y0"]), 224 * rec["zoom"], 224 * rec["zoom"]]
        assert rec["volunteers"] == ["local"] and rec["embedding_shape"] == [1280]


def test_similar_first_row_is_the_tile(cat):
    meta = cat.metadata()
    for tid in meta["tile_id"][::3]:
        res = cat.similar(tid, k=5)
        assert len(res) == 5
        assert res.colnames[: len(RESULT_COLUMNS)] == list(RESULT_COLUMNS)
        assert res["tile_id"][0] == tid
        assert res["similarity"][0] == pytest.approx(1.0, abs=1e-5)
        assert np.all(np.diff(np.asarray(res["similarity"])) <= 1e-6)
        assert len(set(res["tile_id"])) == 5
    df = res.to_pandas()
    assert list(df.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)


def test_similar_is_exact_inner_product(cat):
    x = cat.vectors().astype(np.float64)
    tid = cat.metadata()["tile_id"][4]
    res = cat.similar(tid, k=6)
    sims = x @ x[4]
    expected = np.sort(sims)[::-1][:6]
    np.testing.assert_allclose(np.asarray(res["similarity"]), expected, atol=1e-5)


def test_rotated_tile_as_array_finds_itself(cat):
    meta = cat.metadata()
    for row in (0, 6, len(meta) - 1):
        tid = meta["tile_id"][row]
        pixels, wcs = cat.tile(tid)
        assert pixels.shape == (224, 224) and wcs.has_celestial
        res = cat.similar(np.rot90(pixels), k=3)
        assert res["tile_id"][0] == tid
        assert res["similarity"][0] > 0.99


def test_fresh_and_in_memory_results_identical(cat, catalogue_dir):
    fresh = Catalogue.open(catalogue_dir)
    for tid in cat.metadata()["tile_id"][::2]:
        a, b = cat.similar(tid, k=7), fresh.similar(tid, k=7)
        assert list(a["tile_id"]) == list(b["tile_id"])
        assert np.array_equal(np.asarray(a["similarity"]), np.asarray(b["similarity"]))


def test_cone_agrees_with_astropy(cat):
    meta = cat.metadata()
    centres = SkyCoord(meta["ra"].to_numpy() * u.deg, meta["dec"].to_numpy() * u.deg)
    for row, radius in ((0, 10 * u.arcsec), (len(meta) - 1, 15 * u.arcsec), (7, 1 * u.deg)):
        centre = SkyCoord(meta["ra"][row] * u.deg + 2 * u.arcsec, meta["dec"][row] * u.deg)
        res = cat.cone(centre, radius)
        expected = set(meta["tile_id"][(centres.separation(centre) <= radius)])
        assert set(res["tile_id"]) == expected and len(expected) >= 1
        assert res["separation"].unit == u.arcsec
        assert np.all(np.diff(np.asarray(res["separation"])) >= 0)
    far = cat.cone(SkyCoord(10 * u.deg, -80 * u.deg), 1 * u.arcmin)
    assert len(far) == 0 and "no tile centre" in far.meta["message"]


@pytest.mark.parametrize(
    ("filters", "check"),
    [
        ({"zoom": 2}, lambda m: m["zoom"] == 2),
        ({"zoom": [1, 2]}, lambda m: m["zoom"].isin([1, 2])),
        ({"filter": "f105w"}, lambda m: m["filter"] == "F105W"),
        ({"filter": ["F105W", "F606W"]}, lambda m: m["filter"].isin(["F105W", "F606W"])),
        ({"instrument": "WFPC2"}, lambda m: m["instrument"] == "WFPC2"),
        ({"date": ("2000-01-01", None)}, lambda m: pd.to_datetime(m["date_obs"]) >= "2000-01-01"),
        ({"proposal": "no-such-proposal"}, lambda m: m["tile_id"] == ""),
    ],
)
def test_filters_return_only_matching_rows(cat, filters, check):
    meta = cat.metadata()
    allowed = set(meta["tile_id"][check(meta)])
    query = meta["tile_id"][0]
    if not allowed:
        with pytest.warns(CatalogWarning, match="passes the filters"):
            res = cat.similar(query, k=3, **filters)
        assert len(res) == 0
        return
    with pytest.warns(CatalogWarning, match="larger than") if len(allowed) < 50 else _nowarn():
        res = cat.similar(query, k=50, **filters)
    assert set(res["tile_id"]) == allowed
    cone = cat.cone(SkyCoord(meta["ra"][0] * u.deg, meta["dec"][0] * u.deg), 180 * u.deg, **filters)
    assert set(cone["tile_id"]) == allowed


def _nowarn():
    import contextlib

    return contextlib.nullcontext()


def test_region_filter(cat):
    meta = cat.metadata()
    centre = SkyCoord(meta["ra"][0] * u.deg, meta["dec"][0] * u.deg)
    res = cat.similar(meta["tile_id"][0], k=3, region=(centre, 20 * u.arcsec))
    sep = SkyCoord(np.asarray(res["ra"]) * u.deg, np.asarray(res["dec"]) * u.deg).separation(centre)
    assert len(res) >= 1 and np.all(sep <= 20 * u.arcsec)
    assert res["tile_id"][0] == meta["tile_id"][0]


def test_skycoord_query_uses_nearest_tile(cat):
    meta = cat.metadata()
    row = int(np.flatnonzero(meta["zoom"].to_numpy() == 2)[0])
    coord = SkyCoord(meta["ra"][row] * u.deg, meta["dec"][row] * u.deg + 1 * u.arcsec)
    res = cat.similar(coord, k=2, zoom=2)
    assert res["tile_id"][0] == meta["tile_id"][row]
    assert np.all(np.asarray(res["zoom"]) == 2)


def test_coordinates_outside_every_footprint(cat):
    with pytest.warns(CatalogWarning, match="outside every tile footprint"):
        res = cat.similar(SkyCoord(10 * u.deg, -80 * u.deg), k=5)
    assert len(res) == 0 and "outside every tile footprint" in res.meta["message"]
    assert res.colnames[: len(RESULT_COLUMNS)] == list(RESULT_COLUMNS)


def test_unknown_tile_id(cat):
    with pytest.raises(UnknownTileError, match=r"metadata\(\)\['tile_id'\]") as info:
        cat.similar("no_such_tile", k=3)
    assert isinstance(info.value, KeyError)
    assert "no_such_tile" in str(info.value)


def test_k_larger_than_catalogue_and_bad_k(cat):
    tid = cat.metadata()["tile_id"][0]
    with pytest.warns(CatalogWarning, match="larger than"):
        res = cat.similar(tid, k=len(cat) + 10)
    assert len(res) == len(cat) and res["tile_id"][0] == tid
    for bad in (0, -1, 2.5, "3"):
        with pytest.raises(QueryError, match="k="):
            cat.similar(tid, k=bad)


def test_unknown_filter_is_refused(cat):
    with pytest.raises(QueryError, match="unknown filter"):
        cat.similar(cat.metadata()["tile_id"][0], k=2, telescope="HST")
    with pytest.raises(QueryError, match="date"):
        cat.similar(cat.metadata()["tile_id"][0], k=2, date=("yesterday-ish", None))


def test_catalogue_versions(cat, catalogue_dir, stores):
    v1 = Catalogue.open(catalogue_dir, version=1)
    n1 = len(stores["main"][1].read_all()[0])
    assert v1.version == 1 and len(v1) == n1
    # appending kept the old rows and their leaf indexes
    pd.testing.assert_frame_equal(
        v1.metadata().drop(columns=["volunteers"]),
        cat.metadata().iloc[:n1].drop(columns=["volunteers"]),
    )
    assert cat.manifest["index"]["how"] == "extended"
    p1, p2 = v1.manifest["provenance"], cat.manifest["provenance"]
    proof = [bytes.fromhex(h) for h in p2["consistency_proof"]]
    assert verify_consistency(
        p1["tree_size"],
        p2["tree_size"],
        bytes.fromhex(p1["root"]),
        bytes.fromhex(p2["root"]),
        proof,
    )
    tid = v1.metadata()["tile_id"][0]
    assert set(v1.similar(tid, k=len(v1))["tile_id"]) == set(v1.metadata()["tile_id"])
    with pytest.raises(CatalogNotFoundError, match="no version 9"):
        Catalogue.open(catalogue_dir, version=9)


def test_rebuilding_with_nothing_new_keeps_the_version(tmp_path, catalogue_dir, stores):
    out = tmp_path / "cat"
    shutil.copytree(catalogue_dir, out)
    again = Catalogue.build(out, *stores["ngc"])
    assert again.version == 2 and len(again) == len(Catalogue.open(catalogue_dir))


def test_merge_disjoint_partial_catalogues(tmp_path, cat, stores):
    a = Catalogue.build(tmp_path / "a", *stores["main"])
    b = Catalogue.build(tmp_path / "b", *stores["ngc"])
    merged = Catalogue.merge(tmp_path / "m", [a, str(tmp_path / "b")])
    assert len(merged) == len(a) + len(b) == len(cat)
    assert list(merged.metadata()["tile_id"]) == list(cat.metadata()["tile_id"])
    assert merged.manifest["provenance"]["root"] == cat.manifest["provenance"]["root"]
    for tid in cat.metadata()["tile_id"][::4]:
        assert list(merged.similar(tid, k=4)["tile_id"]) == list(cat.similar(tid, k=4)["tile_id"])
    # merging a catalogue with itself keeps each tile once
    again = Catalogue.merge(tmp_path / "m2", [a, a])
    assert len(again) == len(a)
    with pytest.raises(CatalogError, match="already holds a catalogue"):
        Catalogue.merge(tmp_path / "m", [a])


def test_merge_refuses_other_models(tmp_path, stores):
    a = Catalogue.build(tmp_path / "a", *stores["ngc"])
    other = tmp_path / "b"
    shutil.copytree(a.store.uri, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["model"]["digest"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleCatalogError, match="build a separate catalogue"):
        Catalogue.merge(tmp_path / "m", [a, other])


def test_missing_or_corrupt_index_and_rebuild(tmp_path, catalogue_dir, cat):
    out = tmp_path / "cat"
    shutil.copytree(catalogue_dir, out)
    index_file = out / cat.manifest["index"]["key"]
    index_file.write_bytes(index_file.read_bytes()[:-100] + b"\0" * 100)
    with pytest.raises(CorruptCatalogError, match="rebuild-index"):
        Catalogue.open(out)
    index_file.unlink()
    with pytest.raises(CorruptCatalogError, match="missing"):
        Catalogue.open(out)
    rebuilt = Catalogue.rebuild_index(out)
    tid = cat.metadata()["tile_id"][2]
    assert list(rebuilt.similar(tid, k=5)["tile_id"]) == list(cat.similar(tid, k=5)["tile_id"])
    assert Catalogue.open(out).manifest["index"]["sha256"] == rebuilt.manifest["index"]["sha256"]
    # finished results were not touched
    assert rebuilt.manifest["provenance"] == cat.manifest["provenance"]


def test_corrupt_vectors_are_detected(tmp_path, catalogue_dir, cat):
    out = tmp_path / "cat"
    shutil.copytree(catalogue_dir, out)
    seg = out / cat.manifest["segments"][0]["vectors_key"]
    data = bytearray(seg.read_bytes())
    data[10] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptCatalogError, match="does not match the sha256"):
        Catalogue.open(out).vectors()


def test_incompatible_or_missing_catalogue(tmp_path, catalogue_dir):
    out = tmp_path / "cat"
    shutil.copytree(catalogue_dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format_version"] = 99
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleCatalogError, match="format version 99"):
        Catalogue.open(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptCatalogError, match="not valid JSON"):
        Catalogue.open(out)
    with pytest.raises(CatalogNotFoundError, match="hubcat build"):
        Catalogue.open(tmp_path / "nothing-here")
