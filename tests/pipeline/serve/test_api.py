"""The service's API against a real ``hubcat serve`` process: searches, formats, cutouts and
provenance verified on the client with the project's own verifier functions."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
import requests
from astropy.io import fits
from astropy.io.votable import parse as parse_votable
from astropy.table import Table

from catalog import CatalogWarning

pytestmark = pytest.mark.slow


def get(service, path, who="reader", **params):
    return requests.get(service.url + path, params=params, headers=service.headers(who), timeout=60)


def test_openapi_describes_every_route(service):
    doc = get(service, "/openapi.json", who=None).json()
    paths = set(doc["paths"])
    for route in (
        "/api/similar/tile/{tile_id}",
        "/api/similar/position",
        "/api/similar/image",
        "/api/cone",
        "/api/tiles/{tile_id}/cutout.png",
        "/api/tiles/{tile_id}/cutout.fits",
        "/api/tiles/{tile_id}/provenance",
        "/scs",
    ):
        assert route in paths
    assert "X-API-Key" in json.dumps(doc["components"]["securitySchemes"])


def test_similar_by_tile_matches_the_notebook_api(service, cat, tile_ids):
    tid = tile_ids[3]
    body = get(service, f"/api/similar/tile/{tid}", k=5).json()
    expected = cat.similar(tid, k=5)
    assert [r["tile_id"] for r in body["rows"]] == list(expected["tile_id"])
    np.testing.assert_allclose(
        [r["similarity"] for r in body["rows"]], expected["similarity"], rtol=1e-6
    )
    assert body["rows"][0]["tile_id"] == tid


def test_similar_with_filters(service, cat, tile_ids):
    meta = cat.metadata()
    tid = tile_ids[0]
    zoom = int(meta["zoom"].iloc[0])
    flt = str(meta["filter"].iloc[0])
    body = get(service, f"/api/similar/tile/{tid}", k=50, zoom=str(zoom), filter=flt).json()
    with pytest.warns(CatalogWarning, match="larger than"):
        expected = cat.similar(tid, k=50, zoom=[zoom], filter=flt)
    assert [r["tile_id"] for r in body["rows"]] == list(expected["tile_id"])
    assert body["meta"]["message"] == expected.meta["message"]  # the warning travels in meta
    assert {r["zoom"] for r in body["rows"]} == {zoom}
    assert {r["filter"] for r in body["rows"]} == {flt}


@pytest.mark.parametrize("fmt", ["votable", "csv"])
def test_result_formats(service, tile_ids, fmt):
    tid = tile_ids[1]
    r = get(service, f"/api/similar/tile/{tid}", k=4, format=fmt)
    assert r.status_code == 200
    if fmt == "votable":
        assert r.headers["content-type"].startswith("application/x-votable+xml")
        table = parse_votable(io.BytesIO(r.content)).get_first_table().to_table()
    else:
        assert r.headers["content-type"].startswith("text/csv")
        table = Table.read(r.text, format="ascii.csv")
    assert table["tile_id"][0] == tid
    assert len(table) == 4


def test_similar_by_position(service, cat, tile_ids):
    row = cat.metadata().iloc[2]
    body = get(
        service,
        "/api/similar/position",
        ra=row["ra"],
        dec=row["dec"],
        radius=5,
        zoom=str(row["zoom"]),
        k=3,
    ).json()
    assert body["rows"][0]["tile_id"] == row["tile_id"]
    assert len(body["rows"]) == 3


def _post_image(service, name, data, who="imager", **params):
    return requests.post(
        service.url + "/api/similar/image",
        params={"k": 3, **params},
        files={"file": (name, data)},
        headers=service.headers(who),
        timeout=120,
    )


def test_similar_by_uploaded_png(service, tile_ids):
    """The tile's own PNG cutout (the stored stretch) finds that tile first."""
    tid = tile_ids[0]
    png = get(service, f"/api/tiles/{tid}/cutout.png").content
    r = _post_image(service, "q.png", png)
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert rows[0]["tile_id"] == tid
    assert rows[0]["similarity"] > 0.99


def test_similar_by_uploaded_fits(service, cat, tile_ids, tmp_path):
    """A raw FITS cut from the real mosaic at a tile's box (in source units, stretched by the
    service as the tiler stretches) finds that tile first; the answer is the notebook API's."""
    meta = cat.metadata()
    row = meta[meta["zoom"] == 1].iloc[0]
    hdu = int(row["hdu"]) if str(row["hdu"]).isdigit() else row["hdu"]
    with fits.open(row["source"]) as hdul:
        data = np.asarray(
            hdul[hdu].data[row["y0"] : row["y0"] + 224, row["x0"] : row["x0"] + 224],
            dtype=np.float32,
        )
    path = tmp_path / "raw.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI")]).writeto(path)
    r = _post_image(service, "raw.fits", path.read_bytes())
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    expected = cat.similar(str(path), k=3)
    assert [x["tile_id"] for x in rows] == list(expected["tile_id"])
    assert rows[0]["tile_id"] == row["tile_id"]


def test_cone_matches_the_notebook_api(service, cat):
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    row = cat.metadata().iloc[0]
    body = get(service, "/api/cone", ra=row["ra"], dec=row["dec"], radius=60).json()
    expected = cat.cone(SkyCoord(row["ra"] * u.deg, row["dec"] * u.deg), 60 * u.arcsec)
    assert [r["tile_id"] for r in body["rows"]] == list(expected["tile_id"])
    assert len(body["rows"]) >= 1


def test_cutouts_png_and_fits_with_wcs(service, cat, tile_ids):
    from PIL import Image

    tid = tile_ids[2]
    stored = cat.tile(tid)
    r = get(service, f"/api/tiles/{tid}/cutout.png")
    assert r.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    np.testing.assert_array_equal(img, np.flipud(np.round(stored.pixels * 255).astype(np.uint8)))
    r = get(service, f"/api/tiles/{tid}/cutout.fits")
    with fits.open(io.BytesIO(r.content)) as hdul:
        np.testing.assert_array_equal(hdul[0].data, stored.pixels)
        from astropy.wcs import WCS

        wcs = WCS(hdul[0].header)
        centre = wcs.pixel_to_world(111.5, 111.5)
        np.testing.assert_allclose(
            [centre.ra.deg, centre.dec.deg],
            stored.wcs.pixel_to_world_values(111.5, 111.5),
            atol=1e-9,
        )
        assert hdul[0].header["TILEID"] == tid


def test_provenance_verifies_on_the_client(service, tile_ids, operator_key):
    """The client checks the leaf, the inclusion proof and the checkpoint signature itself,
    with the project's verifier functions and the operator key it trusts (not the server's)."""
    from catalog.provenance import (
        Checkpoint,
        hash_leaf,
        load_verifier_key,
        parse_leaf,
        verify_inclusion,
    )

    tid = tile_ids[4]
    proof = get(service, f"/api/tiles/{tid}/provenance").json()
    trusted = load_verifier_key(str(operator_key) + ".pub")
    checkpoint = Checkpoint.parse(proof["checkpoint"])
    checkpoint.verify(trusted)  # raises unless the operator signed it
    assert checkpoint.root.hex() == proof["root"] and checkpoint.size == proof["tree_size"]
    leaf = proof["leaf"].encode()
    assert hash_leaf(leaf).hex() == proof["leaf_hash"]
    assert verify_inclusion(
        hash_leaf(leaf),
        proof["leaf_index"],
        proof["tree_size"],
        proof["inclusion_path"],
        proof["root"],
    )
    doc = parse_leaf(leaf)
    # what the client was served is what was signed: the cutout's pixels hash to the leaf's value
    cut = get(service, f"/api/tiles/{tid}/cutout.fits").content
    with fits.open(io.BytesIO(cut)) as hdul:
        pixels = np.ascontiguousarray(hdul[0].data, dtype="<f4")
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == doc["tile_sha256"]
    # a tampered proof fails the same check
    bad = list(proof["inclusion_path"])
    bad[0] = ("0" if bad[0][0] != "0" else "1") + bad[0][1:]
    assert not verify_inclusion(
        hash_leaf(leaf), proof["leaf_index"], proof["tree_size"], bad, proof["root"]
    )


def test_tile_listing_pages_through_the_catalogue(service, tile_ids):
    first = get(service, "/api/tiles", limit=5).json()
    rest = get(service, "/api/tiles", offset=5, limit=1000).json()
    assert [r["tile_id"] for r in first["rows"] + rest["rows"]] == tile_ids
    assert first["meta"]["total"] == len(tile_ids)
    assert set(first["rows"][0]) >= {
        "tile_id",
        "ra",
        "dec",
        "zoom",
        "instrument",
        "filter",
        "date_obs",
    }


def test_a_position_off_the_catalogue_is_an_empty_result_that_says_why(service):
    for params in ({"radius": 5}, {}):
        r = get(service, "/api/similar/position", ra=10.0, dec=-80.0, **params)
        assert r.status_code == 200
        body = r.json()
        assert body["rows"] == []
        assert "(ra=10.000000, dec=-80.000000)" in body["meta"]["message"]
