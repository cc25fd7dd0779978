"""Bad input gets a 4xx whose message says what was wrong, never a 500, and the service lives on."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from astropy.io import fits

pytestmark = pytest.mark.slow


def _get(service, path, **params):
    return requests.get(
        service.url + path, params=params, headers=service.headers("imager"), timeout=60
    )


def _post(service, name, data, **params):
    return requests.post(
        service.url + "/api/similar/image",
        params={"k": 3, **params},
        files={"file": (name, data)},
        headers=service.headers("imager"),
        timeout=60,
    )


def _error(r, status: int, *phrases: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    message = r.json()["error"]
    for phrase in phrases:
        assert phrase in message, message
    return message


@pytest.mark.parametrize(
    ("params", "phrases"),
    [
        ({"ra": "abc", "dec": "10", "radius": "10"}, ["ra='abc' is not a number"]),
        ({"ra": "400", "dec": "10", "radius": "10"}, ["outside 0..360"]),
        ({"ra": "10", "dec": "-91", "radius": "10"}, ["outside -90..90"]),
        ({"ra": "nan", "dec": "10", "radius": "10"}, ["finite"]),
        ({"ra": "10", "dec": "10", "radius": "-1"}, ["negative"]),
        ({"dec": "10", "radius": "10"}, ["ra", "Field required"]),
    ],
)
def test_malformed_coordinates(service, params, phrases):
    _error(_get(service, "/api/cone", **params), 400, *phrases)


def test_radius_too_large(service):
    _error(
        _get(service, "/api/cone", ra="10", dec="10", radius="7200"),
        400,
        "7200",
        "larger than",
        "3600 arcsec",
    )
    _error(
        _get(service, "/api/similar/position", ra="10", dec="10", radius="1e6"), 400, "larger than"
    )


def test_oversized_upload(service):
    big = b"SIMPLE  =" + b" " * (9 * 1024 * 1024)  # over the 8 MB default
    _error(_post(service, "big.fits", big), 413, "bytes", "at most")
    # a small file that decodes to too many pixels (a decompression bomb) is refused unread
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((5000, 5000), np.uint8)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 1024 * 1024
    _error(_post(service, "bomb.png", buf.getvalue()), 413, "5000x5000 pixels")


def test_non_image_upload(service):
    _error(
        _post(service, "notes.txt", b"hello, these are not pixels\n"), 415, "neither a FITS", "PNG"
    )
    _error(_post(service, "empty.fits", b""), 400, "empty")
    _error(
        _post(service, "broken.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 50), 400, "cannot be decoded"
    )
    _error(
        _post(service, "cut.fits", b"SIMPLE  =                    T" + b" " * 50),
        400,
        "cannot be read",
    )


def test_fits_without_a_2d_image(service):
    buf = io.BytesIO()
    cube = fits.ImageHDU(np.zeros((3, 32, 32), np.float32), name="CUBE")
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.arange(3.0))])
    fits.HDUList([fits.PrimaryHDU(), cube, table]).writeto(buf)
    _error(_post(service, "cube.fits", buf.getvalue()), 400, "no 2-D image HDU", "(3, 32, 32)")


def test_unknown_tile(service):
    for path in (
        "/api/similar/tile/nope",
        "/api/tiles/nope",
        "/api/tiles/nope/cutout.png",
        "/api/tiles/nope/cutout.fits",
        "/api/tiles/nope/provenance",
    ):
        _error(_get(service, path), 404, "'nope' is not in the catalogue")


def test_bad_k_format_and_filters(service, tile_ids):
    tid = tile_ids[0]
    _error(_get(service, f"/api/similar/tile/{tid}", k="0"), 400, "k=0")
    _error(_get(service, f"/api/similar/tile/{tid}", k="many"), 400, "k", "integer")
    _error(_get(service, f"/api/similar/tile/{tid}", format="xls"), 400, "format='xls'")
    _error(_get(service, f"/api/similar/tile/{tid}", zoom="two"), 400, "zoom='two'")
    _error(_get(service, f"/api/similar/tile/{tid}", date_start="yesterday-ish"), 400, "not a date")
    _error(_get(service, f"/api/similar/tile/{tid}", region="1,2"), 400, "RA,DEC,RADIUS_ARCSEC")
    _error(_get(service, "/api/no/such/route"), 404, "no such route")


def test_the_service_still_answers(service, tile_ids):
    """After every bad request above, a good one is served as before."""
    r = _get(service, f"/api/similar/tile/{tile_ids[0]}", k=2)
    assert r.status_code == 200
    assert len(r.json()["rows"]) == 2
    assert service.process.poll() is None
