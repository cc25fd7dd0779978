"""Every bad input of the tiling stage: a clear error (or warning) naming the file and the fix."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from hubcat.synthetic import write_synthetic_mosaic
from tiling import (
    NonFinitePixelsWarning,
    SourceError,
    SourceNotFoundError,
    TileStore,
    TilingConfig,
    tile_sources,
)

CONFIG = TilingConfig(zooms=(1,), unit_size=8)


@pytest.fixture
def store(tmp_path):
    return TileStore.create(tmp_path / "tiles", CONFIG)


def _image(path: Path, data: np.ndarray, header: dict | None = None) -> Path:
    hdu = fits.PrimaryHDU(data)
    wcs_cards = {
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CRVAL1": 150.0,
        "CRVAL2": 2.0,
        "CRPIX1": 1.0,
        "CRPIX2": 1.0,
        "CDELT1": -1e-5,
        "CDELT2": 1e-5,
    }
    for key, value in {**wcs_cards, **(header or {})}.items():
        hdu.header[key] = value
    hdu.writeto(path)
    return path


def test_undrizzled_flt_is_refused_with_the_fix(store, hst_dir):
    with pytest.raises(SourceError) as info:
        store.add_mosaic(hst_dir / "j8bt06nyq_flt.fits")
    text = str(info.value)
    assert "j8bt06nyq_flt.fits" in text
    assert "not square" in text and "0.0284" in text and "0.0248" in text
    assert "_drz/_drc" in text
    assert store.metadata().empty


def test_skewed_pixels_are_refused_even_without_a_telltale_name(store, tmp_path):
    path = _image(
        tmp_path / "renamed.fits",
        np.ones((300, 300), np.float32),
        {"CD1_1": -7.36e-6, "CD1_2": 1.85e-6, "CD2_1": 2.87e-6, "CD2_2": 6.65e-6},
    )
    with pytest.raises(SourceError, match=r"not a drizzled mosaic.*not square"):
        store.add_mosaic(path)


def test_header_only_skycell_has_no_valid_pixel(store, hst_dir):
    with pytest.raises(SourceError, match=r"HEADER_ONLY\.fits: has no valid pixel.*WHT is 0"):
        store.add_mosaic(hst_dir / "drizzlepac_sample_mvm_drc_HEADER_ONLY.fits")


def test_candels_cutouts_are_smaller_than_a_tile(store, hst_dir):
    name = "candels_gn_30mas_189.492060_62.206150_100.0pix-x-100.0pix_astrocut.fits"
    with pytest.raises(SourceError) as info:
        store.add_mosaic(hst_dir / name)
    text = str(info.value)
    assert name in text
    for hdu in (1, 2, 3):  # every band was considered, each as its own mosaic
        assert f"HDU {hdu} is 100x100 px, smaller than one 224x224 tile" in text


def test_smaller_than_a_tile_at_higher_zooms_skips_those_zooms(tmp_path):
    store = TileStore.create(tmp_path / "t", TilingConfig(zooms=(1, 2, 4)))
    path = write_synthetic_mosaic(tmp_path / "small.fits", shape=(500, 460))
    report = store.add_mosaic(path)
    mosaic = report.mosaics[0]
    assert mosaic.tiles_per_zoom[1] > 0 and mosaic.tiles_per_zoom[2] == 1
    assert "smaller than one tile at zoom 4 (896x896" in mosaic.skipped_zooms[4]
    assert set(store.metadata()["zoom"]) == {1, 2}


def test_missing_file(store, tmp_path):
    with pytest.raises(SourceNotFoundError, match=r"nope\.fits: does not exist"):
        store.add_mosaic(tmp_path / "nope.fits")


def test_not_fits_and_corrupt_gzip(store, tmp_path):
    junk = tmp_path / "junk.fits"
    junk.write_bytes(np.random.default_rng(0).bytes(10000))
    with pytest.raises(SourceError, match=r"junk\.fits: is not a readable FITS file"):
        store.add_mosaic(junk)
    bad_gz = tmp_path / "bad.fits.gz"
    bad_gz.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 100)
    with pytest.raises(SourceError, match=r"bad\.fits\.gz: is not a valid gzip stream"):
        store.add_mosaic(bad_gz)
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="is empty"):
        store.add_mosaic(empty)


@pytest.mark.parametrize("fraction", [0.3, 0.7])
def test_truncated_fits(store, tmp_path, fraction):
    full = write_synthetic_mosaic(tmp_path / "full.fits", shape=(400, 400))
    data = full.read_bytes()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(SourceError, match=r"cut\.fits: is truncated.*re-download"):
        store.add_mosaic(cut)


def test_table_only_fits_has_no_image(store, tmp_path):
    path = tmp_path / "table.fits"
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="D", array=np.arange(3.0))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    with pytest.raises(SourceError, match=r"table\.fits: has no 2-D image HDU"):
        store.add_mosaic(path)


def test_non_celestial_wcs(store, tmp_path):
    path = _image(
        tmp_path / "linear.fits",
        np.ones((300, 300), np.float32),
        {"CTYPE1": "LINEAR", "CTYPE2": "LINEAR"},
    )
    with pytest.raises(SourceError, match=r"linear\.fits: .*no celestial WCS.*RA---TAN"):
        store.add_mosaic(path)


def test_wcs_that_does_not_parse(store, tmp_path):
    path = _image(
        tmp_path / "badwcs.fits",
        np.ones((300, 300), np.float32),
        {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CDELT1": 0.0, "CDELT2": 0.0},
    )
    with pytest.raises(SourceError, match=r"badwcs\.fits: .*WCS"):
        store.add_mosaic(path)


def test_all_nan_data(store, tmp_path):
    path = _image(tmp_path / "nan.fits", np.full((300, 300), np.nan, np.float32))
    with pytest.raises(SourceError, match=r"nan\.fits: has no valid pixel.*NaN"):
        store.add_mosaic(path)


def test_nan_and_inf_inside_the_footprint_warn_and_are_masked(tmp_path):
    path = write_synthetic_mosaic(tmp_path / "holes.fits", shape=(300, 300))
    with fits.open(path, mode="update") as hdul:
        hdul["SCI"].data[100:110, 100:120] = np.nan
        hdul["SCI"].data[5, 5] = np.inf
    store = TileStore.create(tmp_path / "t", CONFIG)
    with pytest.warns(NonFinitePixelsWarning, match=r"holes\.fits: HDU 1 has 201 NaN/inf pixels"):
        report = store.add_mosaic(path)
    assert report.warnings
    meta = store.metadata()
    tile, mask = store.read(meta.tile_id[0], mask=True)
    assert not mask[100:110, 100:120].any() and not mask[5, 5]
    assert np.isfinite(tile).all() and (tile[100:110, 100:120] == 0).all()


def test_a_batch_completes_despite_bad_files(tmp_path, hst_dir):
    store = TileStore.create(tmp_path / "t", CONFIG)
    good = write_synthetic_mosaic(tmp_path / "good.fits", shape=(300, 300))
    gz = tmp_path / "good2.fits.gz"
    with open(write_synthetic_mosaic(tmp_path / "good2.fits", shape=(300, 300), seed=2), "rb") as f:
        with gzip.open(gz, "wb") as out:
            shutil.copyfileobj(f, out)
    sources = [
        hst_dir / "j8bt06nyq_flt.fits",
        good,
        tmp_path / "missing.fits",
        hst_dir / "drizzlepac_sample_mvm_drc_HEADER_ONLY.fits",
        gz,
    ]
    report = tile_sources(store, sources)
    assert len(report.added) == 2 and len(report.failed) == 3
    assert not report.ok
    summary = report.summary()
    assert "2 tiled" in summary and "3 failed" in summary
    assert "j8bt06nyq_flt.fits" in summary and "missing.fits" in summary
    assert len(store.metadata()["mosaic_id"].unique()) == 2
