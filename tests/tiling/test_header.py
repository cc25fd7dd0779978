"""Header normalisation of HST conventions (FILTER*, FILTNAM*, DATE-OBS forms, EXPSTART, BUNIT)."""

from __future__ import annotations

import math

import pytest
from astropy.io import fits

from tiling import normalise_bunit, normalise_header


def test_hap_skycell_headers(hst_dir):
    path = hst_dir / "drizzlepac_sample_mvm_drc_HEADER_ONLY.fits"
    with fits.open(path) as hdul:
        out = normalise_header(hdul["SCI"].header, hdul[0].header, name=path.name)
    assert out["telescope"] == "HST"
    assert (out["instrument"], out["detector"], out["filter"]) == ("ACS", "WFC", "F435W")
    assert out["date_obs"] == "2004-02-09"
    assert out["exptime"] == 2070.0 and out["proposal_id"] == "10001"
    assert out["target"] == "NGC3998ULX" and out["bunit"] == "electron / s"


def test_undrizzled_flt_headers_normalise_too(hst_dir):
    with fits.open(hst_dir / "j8bt06nyq_flt.fits") as hdul:
        out = normalise_header(hdul["SCI"].header, hdul[0].header)
    assert (out["instrument"], out["detector"], out["filter"]) == ("ACS", "HRC", "F606W")
    assert out["bunit"] == "electron"


@pytest.mark.parametrize(
    ("cards", "expected"),
    [
        ({"FILTER1": "CLEAR1L", "FILTER2": "F814W"}, "F814W"),
        ({"FILTER1": "F606W", "FILTER2": "CLEAR2L"}, "F606W"),
        ({"FILTER1": "F606W", "FILTER2": "POL0V"}, "F606W+POL0V"),
        ({"FILTER": "F105W"}, "F105W"),
        ({"FILTER": "CLEAR", "FILTER1": "F475W", "FILTER2": "CLEAR2L"}, "F475W"),
        ({"FILTER1": 28, "FILTER2": 0, "FILTNAM1": "F606W", "FILTNAM2": ""}, "F606W"),
        ({}, ""),
    ],
)
def test_filter_conventions(cards, expected):
    assert normalise_header(fits.Header(cards))["filter"] == expected


@pytest.mark.parametrize(
    ("cards", "expected"),
    [
        ({"DATE-OBS": "2004-03-01"}, "2004-03-01"),
        ({"DATE-OBS": "2004-03-01T12:00:00"}, "2004-03-01"),
        ({"DATE-OBS": "28/09/98"}, "1998-09-28"),
        ({"EXPSTART": 52995.85653448}, "2003-12-22"),
        ({"DATE-OBS": "garbage", "EXPSTART": 51084.28}, "1998-09-28"),
        ({}, ""),
    ],
)
def test_date_conventions(cards, expected):
    assert normalise_header(fits.Header(cards))["date_obs"] == expected


def test_extension_wins_and_primary_fills_gaps():
    ext = fits.Header({"FILTER": "F160W", "BUNIT": "ELECTRONS/S"})
    primary = fits.Header({"INSTRUME": "WFC3", "DETECTOR": "IR", "FILTER": "F110W", "EXPTIME": 10})
    out = normalise_header(ext, primary)
    assert (out["instrument"], out["filter"], out["exptime"]) == ("WFC3", "F160W", 10.0)
    assert math.isnan(normalise_header(fits.Header())["exptime"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ELECTRONS/S", "electron / s"),
        ("electron / s", "electron / s"),
        ("e-/s", "electron / s"),
        ("ELECTRONS", "electron"),
        ("COUNTS/S", "count / s"),
        ("", ""),
        (None, ""),
        ("MJy/sr", "MJy / sr"),
        ("weird-unit", "weird-unit"),
    ],
)
def test_bunit_spellings(value, expected):
    assert normalise_bunit(value) == expected
