"""IVOA Simple Cone Search at /scs, queried with pyvo's SCSService as any VO client would."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io.votable import parse as parse_votable

pyvo = pytest.importorskip("pyvo", reason="pyvo is the SCS client of these tests")

pytestmark = pytest.mark.slow


def test_pyvo_cone_search_returns_the_catalogues_tiles(service, cat):
    row = cat.metadata().iloc[0]
    centre = SkyCoord(row["ra"] * u.deg, row["dec"] * u.deg)
    results = pyvo.dal.SCSService(service.url + "/scs").search(pos=centre, radius=60 * u.arcsec)
    expected = cat.cone(centre, 60 * u.arcsec)
    assert len(results) == len(expected) >= 1
    # the three columns SCS requires, found by their UCDs as clients find them
    ids = results.fieldname_with_ucd("ID_MAIN")
    ra = results.fieldname_with_ucd("POS_EQ_RA_MAIN")
    dec = results.fieldname_with_ucd("POS_EQ_DEC_MAIN")
    assert (ids, ra, dec) == ("tile_id", "ra", "dec")
    table = results.to_table()
    assert list(table["tile_id"]) == list(expected["tile_id"])
    np.testing.assert_allclose(table["ra"], expected["ra"])
    np.testing.assert_allclose(table["dec"], expected["dec"])
    assert results.getrecord(0).pos.separation(centre) < 60 * u.arcsec


def test_verb_selects_the_columns(service, cat):
    row = cat.metadata().iloc[0]
    service_ = pyvo.dal.SCSService(service.url + "/scs")
    centre = SkyCoord(row["ra"] * u.deg, row["dec"] * u.deg)
    one = service_.search(pos=centre, radius=0.02, verbosity=1).to_table()
    three = service_.search(pos=centre, radius=0.02, verbosity=3).to_table()
    assert one.colnames == ["tile_id", "ra", "dec"]
    assert {"separation", "filter", "instrument", "pixel_scale", "source"} <= set(three.colnames)


def test_an_empty_cone_is_an_empty_table(service):
    results = pyvo.dal.SCSService(service.url + "/scs").search(pos=(10.0, -80.0), radius=0.01)
    assert len(results) == 0
    assert results.fieldname_with_ucd("ID_MAIN") == "tile_id"


def test_errors_reach_pyvo_as_the_standard_says(service):
    """SCS 1.03: an error is a VOTable with INFO name="Error"; pyvo raises it as DALQueryError."""
    scs = pyvo.dal.SCSService(service.url + "/scs")
    with pytest.raises(pyvo.dal.DALQueryError, match="larger than this service's limit"):
        scs.search(pos=(53.0, -27.0), radius=5.0)
    r = requests.get(
        service.url + "/scs", params={"RA": "abc", "DEC": "-27", "SR": "0.1"}, timeout=30
    )
    votable = parse_votable(io.BytesIO(r.content))
    (info,) = [i for i in votable.infos if i.name == "Error"]
    assert "RA='abc' is not a number" in info.value
    r = requests.get(service.url + "/scs", params={"RA": "53", "SR": "0.1"}, timeout=30)
    (info,) = [i for i in parse_votable(io.BytesIO(r.content)).infos if i.name == "Error"]
    assert "DEC is missing" in info.value
