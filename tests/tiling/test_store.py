"""TileStore on a synthetic mosaic: contract, pixels, coordinates, ids, units, integrity."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from hubcat.errors import StoreNotFoundError
from hubcat.synthetic import write_synthetic_mosaic
from tiling import (
    AUGMENTATIONS,
    TileNotFoundError,
    TileStore,
    TilingConfig,
    TilingError,
    UnitIntegrityError,
)

CONTRACT_COLUMNS = [
    "tile_id", "mosaic_id", "unit_key", "source", "source_sha256", "hdu", "zoom", "x0", "y0",
    "ra", "dec", "pixel_scale", "coverage", "instrument", "detector", "filter", "date_obs",
    "exptime", "proposal_id", "target", "bunit", "tile_sha256",
]  # fmt: skip

CONFIG = TilingConfig(zooms=(1, 2), unit_size=8)


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    path = tmp_path_factory.mktemp("mosaic") / "synthetic_drz.fits"
    return write_synthetic_mosaic(path, shape=(700, 520), footprint_margin=30)


@pytest.fixture(scope="module")
def store(tmp_path_factory, mosaic):
    s = TileStore.create(tmp_path_factory.mktemp("store") / "tiles", CONFIG)
    report = s.add_mosaic(mosaic)
    assert report.mosaics[0].status == "added"
    return s


def expected_tile(path, x0, y0, zoom, stretch_params, size=224):
    """Independent recomputation of a tile from the FITS file (numpy only)."""
    with fits.open(path) as hdul:
        sci = hdul["SCI"].data.astype(np.float64)
        wht = hdul["WHT"].data
    box = size * zoom
    vals = np.zeros((box, box))
    valid = np.zeros((box, box), bool)
    sub = sci[y0 : y0 + box, x0 : x0 + box]
    vals[: sub.shape[0], : sub.shape[1]] = sub
    valid[: sub.shape[0], : sub.shape[1]] = wht[y0 : y0 + box, x0 : x0 + box] > 0
    vals[~valid] = 0
    s = vals.reshape(size, zoom, size, zoom).sum(axis=(1, 3))
    c = valid.reshape(size, zoom, size, zoom).sum(axis=(1, 3))
    binned = np.where(c > 0, s / np.maximum(c, 1), 0.0)
    lo, hi, a = stretch_params["lo"], stretch_params["hi"], stretch_params["a"]
    v = np.clip((binned - lo) / (hi - lo), 0, 1)
    out = np.arcsinh(v / a) / np.arcsinh(1 / a)
    out[c == 0] = 0
    return out.astype(np.float32), c > 0, valid.mean()


def test_metadata_has_the_contract_columns(store):
    meta = store.metadata()
    assert list(meta.columns[:3]) == ["tile_id", "mosaic_id", "unit_key"]
    for column in CONTRACT_COLUMNS:
        assert column in meta.columns, column
    assert meta["tile_id"].is_unique
    assert set(meta["zoom"]) == {1, 2}
    assert (meta["instrument"] == "ACS").all()
    assert (meta["filter"] == "F814W").all()  # FILTER2 is CLEAR2L, skipped
    assert (meta["date_obs"] == "2004-03-01").all()
    assert (meta["bunit"] == "electron / s").all()
    assert (meta["proposal_id"] == "9822").all()
    assert (meta["coverage"] >= CONFIG.min_coverage).all()


def test_tile_pixels_equal_the_stretched_binned_source(store, mosaic):
    meta = store.metadata()
    record = store.mosaic_record(meta["mosaic_id"][0])
    for _, row in meta.iterrows():
        tile, mask = store.read(row.tile_id, mask=True)
        assert tile.shape == (224, 224) and tile.dtype == np.float32
        assert 0.0 <= tile.min() and tile.max() <= 1.0
        want, want_mask, coverage = expected_tile(
            mosaic, row.x0, row.y0, row.zoom, record["stretch"]
        )
        np.testing.assert_allclose(tile, want, atol=2e-6)
        np.testing.assert_array_equal(mask, want_mask)
        assert row.coverage == pytest.approx(coverage)
        assert hashlib.sha256(tile.astype("<f4").tobytes()).hexdigest() == row.tile_sha256


def test_centres_agree_with_astropy_to_1_mas(store, mosaic):
    meta = store.metadata()
    with fits.open(mosaic) as hdul:
        wcs = WCS(hdul["SCI"].header)
    box = 224 * meta["zoom"].to_numpy()
    x = meta["x0"].to_numpy() + (box - 1) / 2
    y = meta["y0"].to_numpy() + (box - 1) / 2
    sky = wcs.pixel_to_world(x, y).icrs
    ours = SkyCoord(meta["ra"].to_numpy(), meta["dec"].to_numpy(), unit="deg", frame="icrs")
    sep = sky.separation(ours)
    assert sep.to_value("mas").max() < 1.0
    np.testing.assert_allclose(meta["pixel_scale"], 0.05 * meta["zoom"], rtol=1e-6)


def test_zoom_2_tile_covers_448_source_pixels(store):
    meta = store.metadata()
    z2 = meta[meta["zoom"] == 2]
    assert len(z2) >= 1
    assert (z2["box"] == 448).all()
    assert set(z2["x0"] % 448) == {0}  # default stride: no overlap


def test_tile_wcs_maps_tile_pixels_onto_the_source_sky(store, mosaic):
    meta = store.metadata()
    with fits.open(mosaic) as hdul:
        wcs = WCS(hdul["SCI"].header)
    for _, row in meta.groupby("zoom").head(1).iterrows():
        tw = store.tile_wcs(row.tile_id)
        z = row.zoom
        for i, j in [(0, 0), (111.5, 111.5), (223, 10)]:
            a = tw.pixel_to_world(i, j)
            b = wcs.pixel_to_world(row.x0 + i * z + (z - 1) / 2, row.y0 + j * z + (z - 1) / 2)
            assert a.separation(b).to_value("mas") < 1e-3
        _tile, tw2 = store.read(row.tile_id, wcs=True)
        assert tw2.pixel_shape == (224, 224)


def test_units_are_chunks_with_verified_hashes(store):
    units = store.units()
    meta = store.metadata()
    assert sum(len(u.tile_ids) for u in units) == len(meta)
    assert all(len(u.tile_ids) <= CONFIG.unit_size for u in units)
    for ref in units:
        ids, tiles = store.read_unit(ref.unit_key)
        assert ids == list(ref.tile_ids)
        assert tiles.shape == (len(ids), 224, 224) and tiles.dtype == np.float32
        assert hashlib.sha256(tiles.tobytes()).hexdigest() == ref.sha256
        rows = meta.set_index("tile_id").loc[ids]
        assert (rows["unit_key"] == ref.unit_key).all()
        np.testing.assert_array_equal(tiles[0], store.read(ids[0]))


def test_unit_chunk_says_where_a_reader_of_raw_bytes_finds_each_unit(store):
    """Decoding the raw chunk object the store names gives exactly the unit's tiles."""
    for ref in store.units():
        chunk = store.unit_chunk(ref)
        assert chunk == store.unit_chunk(ref.unit_key)
        data = store.objects.get(chunk.key)
        rows = np.frombuffer(data, dtype=chunk.dtype).reshape(chunk.chunk_shape)
        tiles = rows[chunk.offset : chunk.offset + len(ref.tile_ids)]
        _, expected = store.read_unit(ref.unit_key)
        np.testing.assert_array_equal(tiles, expected)
        assert hashlib.sha256(np.ascontiguousarray(tiles, "<f4").data).hexdigest() == ref.sha256


def test_adding_again_is_skipped_and_reopening_sees_the_same(store, mosaic):
    report = store.add_mosaic(mosaic)
    assert report.already_present and report.tiles_written == 0
    again = TileStore.open(store.uri)
    assert again.config == store.config
    assert again.metadata().equals(store.metadata())
    attrs = dict(again._group.attrs)
    assert attrs["augmentations"] == list(AUGMENTATIONS)
    assert attrs["tiling_digest"] == CONFIG.digest()


def test_retiling_gives_the_same_ids_and_bytes(tmp_path, store, mosaic):
    other = TileStore.create(tmp_path / "other", CONFIG)
    other.add_mosaic(str(mosaic))
    a, b = store.metadata(), other.metadata()
    assert list(a["tile_id"]) == list(b["tile_id"])
    assert list(a["tile_sha256"]) == list(b["tile_sha256"])
    assert [u.sha256 for u in store.units()] == [u.sha256 for u in other.units()]


def test_corrupted_unit_is_detected(tmp_path, mosaic):
    s = TileStore.create(tmp_path / "t", TilingConfig(zooms=(2,), unit_size=4))
    s.add_mosaic(mosaic)
    ref = s.units()[0]
    import zarr

    arr = zarr.open_array(s._group.store, path=f"tiles/{ref.mosaic_id}/z2", mode="r+")
    arr[0, 0, 0] = arr[0, 0, 0] + 0.5
    with pytest.raises(UnitIntegrityError, match=ref.unit_key):
        TileStore.open(s.uri).read_unit(ref.unit_key)


def test_store_opening_errors(tmp_path, store):
    with pytest.raises(StoreNotFoundError, match="no tile store"):
        TileStore.open(tmp_path / "nothing")
    with pytest.raises(TilingError, match="already exists"):
        TileStore.create(store.uri, CONFIG)
    with pytest.raises(TilingError, match="other tiling parameters"):
        TileStore.open_or_create(store.uri, TilingConfig(zooms=(1,)))
    assert TileStore.open_or_create(store.uri, CONFIG).uri == store.uri
    with pytest.raises(TileNotFoundError, match="not in the tile store"):
        store.read("no-such-tile")
    with pytest.raises(TileNotFoundError, match="work unit"):
        store.read_unit("nope/z1/0")


def test_config_validation_and_digest():
    assert TilingConfig().digest() == TilingConfig(workers=1).digest()
    assert TilingConfig().digest() != TilingConfig(stride=112).digest()
    assert TilingConfig.from_dict(TilingConfig(zooms=(1, 3)).to_dict()) == TilingConfig(
        zooms=(1, 3)
    )
    for bad in [
        {"zooms": ()},
        {"zooms": (0,)},
        {"stride": 0},
        {"stride": 300},
        {"min_coverage": 0},
        {"stretch_percentiles": (99, 1)},
        {"unit_size": 0},
    ]:
        with pytest.raises(TilingError):
            TilingConfig(**bad)
