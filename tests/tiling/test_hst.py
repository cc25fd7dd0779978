"""Tiling the real HST files of ../shared/data/hst/: coordinates, pixels, header conventions."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from tiling import TileStore, TilingConfig

DRZ = "drizzle_reference_square_image_acs-hrc_f606w_ngc104.fits"
MPDAF = "mpdaf_HST-HDFS.fits"
GALSIM = "galsim_cosmos_147246.0_150.416558_1.998697_masknoise.fits"
ABELL = "abell_2744_cd_galaxy_f105w.fits.gz"
TILEABLE = {DRZ: "SCI", MPDAF: "DATA", GALSIM: 0, ABELL: 0}

CONFIG = TilingConfig(zooms=(1, 2), unit_size=16)


@pytest.fixture(scope="module")
def store(tmp_path_factory, hst_dir):
    s = TileStore.create(tmp_path_factory.mktemp("hst") / "tiles", CONFIG)
    for name in TILEABLE:
        s.add_mosaic(hst_dir / name)
    return s


def _rows(store, name):
    meta = store.metadata()
    return meta[meta["source"].str.endswith(name)]


def _load(path, hdu):
    with fits.open(path) as hdul:
        sci = hdul[hdu].data.astype(np.float64)
        with _quiet():
            wcs = WCS(hdul[hdu].header)
        wht = hdul["WHT"].data if "WHT" in hdul else None
    return sci, wht, wcs


class _quiet:
    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", FITSFixedWarning)

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)


@pytest.mark.parametrize("name", list(TILEABLE))
def test_centres_agree_with_astropy_wcs_to_1_mas(store, hst_dir, name):
    rows = _rows(store, name)
    assert len(rows) > 0
    _sci, _wht, wcs = _load(hst_dir / name, TILEABLE[name])
    box = 224 * rows["zoom"].to_numpy()
    sky = wcs.pixel_to_world(
        rows["x0"].to_numpy() + (box - 1) / 2, rows["y0"].to_numpy() + (box - 1) / 2
    )
    ours = SkyCoord(rows["ra"].to_numpy(), rows["dec"].to_numpy(), unit="deg", frame="icrs")
    assert sky.icrs.separation(ours).to_value("mas").max() < 1.0


@pytest.mark.parametrize("name", list(TILEABLE))
def test_tiles_equal_stretched_binned_source_pixels(store, hst_dir, name):
    rows = _rows(store, name)
    sci, wht, _wcs = _load(hst_dir / name, TILEABLE[name])
    valid_all = (wht > 0) & np.isfinite(sci) if wht is not None else np.isfinite(sci) & (sci != 0)
    stretch = store.mosaic_record(rows["mosaic_id"].iloc[0])["stretch"]
    for _, row in rows.groupby("zoom").head(3).iterrows():
        z, b = int(row.zoom), 224 * int(row.zoom)
        vals = np.zeros((b, b))
        valid = np.zeros((b, b), bool)
        sub = sci[row.y0 : row.y0 + b, row.x0 : row.x0 + b]
        vals[: sub.shape[0], : sub.shape[1]] = np.nan_to_num(sub)
        valid[: sub.shape[0], : sub.shape[1]] = valid_all[row.y0 : row.y0 + b, row.x0 : row.x0 + b]
        vals[~valid] = 0
        s = vals.reshape(224, z, 224, z).sum(axis=(1, 3))
        c = valid.reshape(224, z, 224, z).sum(axis=(1, 3))
        binned = np.where(c > 0, s / np.maximum(c, 1), 0)
        v = np.clip((binned - stretch["lo"]) / (stretch["hi"] - stretch["lo"]), 0, 1)
        want = np.where(c > 0, np.arcsinh(v / stretch["a"]) / np.arcsinh(1 / stretch["a"]), 0)
        tile, mask = store.read(row.tile_id, mask=True)
        np.testing.assert_allclose(tile, want.astype(np.float32), atol=2e-6)
        np.testing.assert_array_equal(mask, c > 0)
        assert row.coverage == pytest.approx(valid.mean())


def test_drizzled_reference_footprint_from_wht(store):
    rows = _rows(store, DRZ)
    record = store.mosaic_record(rows["mosaic_id"].iloc[0])
    assert record["footprint"] == "WHT"
    assert record["shape"] == [1137, 1163]
    # empty primary header: instrument/detector/filter come from the product name
    assert set(rows["instrument"]) == {"ACS"}
    assert set(rows["detector"]) == {"HRC"}
    assert set(rows["filter"]) == {"F606W"}
    assert set(rows["bunit"]) == {""}
    assert rows["coverage"].min() >= 0.5
    assert rows["coverage"].min() < 1.0  # partially covered tiles are kept with a mask
    np.testing.assert_allclose(rows["pixel_scale"] / rows["zoom"], 0.025, rtol=1e-3)
    assert (rows[rows["zoom"] == 2]["box"] == 448).all()


def test_header_conventions_are_normalised(store):
    wfpc2 = _rows(store, MPDAF).iloc[0]
    assert (wfpc2.instrument, wfpc2["filter"], wfpc2.date_obs) == ("WFPC2", "F606W", "1998-09-28")
    assert wfpc2.detector == "PC1" and wfpc2.telescope == "HST" and wfpc2.bunit == ""
    assert wfpc2.exptime == pytest.approx(381600.0) and wfpc2.proposal_id == "8058"
    cosmos = _rows(store, GALSIM).iloc[0]
    assert (cosmos.instrument, cosmos.detector, cosmos["filter"]) == ("ACS", "WFC", "F814W")
    assert (cosmos.bunit, cosmos.target, cosmos.date_obs) == (
        "electron",
        "COSMOS19-06",
        "2003-12-22",
    )
    ir = _rows(store, ABELL).iloc[0]
    assert (ir.instrument, ir.detector, ir["filter"], ir.bunit) == (
        "WFC3",
        "IR",
        "F105W",
        "electron / s",
    )
    assert ir.date_obs == "2013-08-25"  # from EXPSTART (MJD 56529.1); no DATE-OBS card
    assert ir.source.endswith(".fits.gz")


def test_raw_header_cards_are_kept(store):
    rows = _rows(store, MPDAF)
    record = store.mosaic_record(rows["mosaic_id"].iloc[0])
    assert record["primary_cards"]["DATE-OBS"] == "28/09/98"
    assert record["header_cards"]["FILTNAM1"] == "F606W"
