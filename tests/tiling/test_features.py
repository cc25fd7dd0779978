"""Stride, multi-band files, source-centred cutouts, interruption, S3 sources, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

from hubcat.synthetic import write_synthetic_mosaic
from pipeline.cli import main
from tiling import TileStore, TilingConfig, _ingest


def test_stride_makes_overlapping_tiles_with_the_halo(tmp_path):
    path = write_synthetic_mosaic(tmp_path / "m.fits", shape=(600, 600))
    store = TileStore.create(tmp_path / "t", TilingConfig(zooms=(1, 2), stride=112, unit_size=16))
    store.add_mosaic(path)
    meta = store.metadata()
    z1 = meta[meta["zoom"] == 1]
    assert sorted(set(z1["x0"])) == [0, 112, 224, 336, 448]  # 448 + 224 > 600: overhang kept
    z2 = meta[meta["zoom"] == 2]
    assert sorted(set(z2["x0"])) == [0, 224]  # stride 112 tile px = 224 source px at zoom 2
    with fits.open(path) as hdul:
        sci = hdul["SCI"].data.astype(np.float64)
    rec = store.mosaic_record(meta["mosaic_id"][0])["stretch"]
    row = z2[(z2["x0"] == 224) & (z2["y0"] == 0)].iloc[0]
    binned = sci[0:448, 224 : 672 if 672 <= 600 else 600]
    assert binned.shape == (448, 376)  # overhangs the right edge: the rest is masked
    tile, mask = store.read(row.tile_id, mask=True)
    assert mask[:, :188].all() and not mask[:, 188:].any()
    b = sci[0:448, 224:600].reshape(224, 2, 188, 2).mean(axis=(1, 3))
    v = np.clip((b - rec["lo"]) / (rec["hi"] - rec["lo"]), 0, 1)
    want = np.arcsinh(v / rec["a"]) / np.arcsinh(1 / rec["a"])
    np.testing.assert_allclose(tile[:, :188], want, atol=2e-6)


def test_multi_band_file_gives_one_mosaic_per_band(tmp_path):
    one = write_synthetic_mosaic(tmp_path / "one.fits", shape=(300, 300))
    with fits.open(one) as hdul:
        sci = hdul["SCI"]
        bands = []
        for filt in ("F606W", "F814W", "F850LP"):
            h = sci.header.copy()
            h["EXTNAME"] = "CUTOUT"
            h["FILTER"] = filt
            h["INSTRUME"] = "ACS"
            bands.append(fits.ImageHDU(sci.data * (1 + len(bands)), header=h))
        fits.HDUList([fits.PrimaryHDU(), *bands]).writeto(tmp_path / "bands.fits")
    store = TileStore.create(tmp_path / "t", TilingConfig(zooms=(1,)))
    report = store.add_mosaic(tmp_path / "bands.fits")
    assert [m.hdu for m in report.mosaics] == [1, 2, 3]
    meta = store.metadata()
    assert list(meta.groupby("hdu")["filter"].first()) == ["F606W", "F814W", "F850LP"]
    assert meta["mosaic_id"].nunique() == 3


def test_source_centred_cutouts(tmp_path):
    path = write_synthetic_mosaic(tmp_path / "gal.fits", shape=(500, 500), n_sources=12, seed=3)
    cfg = TilingConfig(zooms=(1,), centred_cutouts=True, extended_sigma_arcsec=0.1)
    store = TileStore.create(tmp_path / "t", cfg)
    report = store.add_mosaic(path)
    meta = store.metadata()
    centred = meta[meta["kind"] == "centred"]
    grid = meta[meta["kind"] == "grid"]
    assert report.mosaics[0].centred_per_zoom[1] == len(centred) > 0
    assert grid["has_extended"].any()
    assert centred["tile_id"].str.contains("_c_").all()
    # each cutout is centred on a source: the light near its centre peaks at the centre
    with fits.open(path) as hdul:
        sci = hdul["SCI"].data.astype(np.float64)
    for _, row in centred.iterrows():
        assert store.read(row.tile_id).shape == (224, 224)
        cy, cx = row.y0 + 111.5, row.x0 + 111.5
        y, x = np.mgrid[int(cy) - 15 : int(cy) + 17, int(cx) - 15 : int(cx) + 17]
        w = np.clip(sci[y.clip(0, 499), x.clip(0, 499)] - 0.03, 0, None)
        assert w.sum() > 0
        assert abs((w * x).sum() / w.sum() - cx) < 5 and abs((w * y).sum() / w.sum() - cy) < 5


def test_interrupted_add_leaves_nothing_visible_and_resumes(tmp_path, monkeypatch):
    path = write_synthetic_mosaic(tmp_path / "m.fits", shape=(500, 500))
    store = TileStore.create(tmp_path / "t", TilingConfig(zooms=(1, 2), unit_size=4))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # after every tile array was written, before the record

    monkeypatch.setattr(_ingest, "_commit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.add_mosaic(path)
    monkeypatch.undo()
    reopened = TileStore.open(store.uri)
    assert reopened.metadata().empty and reopened.units() == []
    assert any(k.startswith("tiles/") for k in reopened.objects.list())  # half-written arrays
    report = reopened.add_mosaic(path)
    assert report.mosaics[0].status == "added"
    clean = TileStore.create(tmp_path / "clean", reopened.config)
    clean.add_mosaic(path)
    assert [u.sha256 for u in reopened.units()] == [u.sha256 for u in clean.units()]
    for ref in reopened.units():
        reopened.read_unit(ref.unit_key)


@pytest.mark.s3
@pytest.mark.slow
def test_s3_source_and_s3_store(tmp_path, s3_server, hst_dir):
    """Read a drizzled file and a gzipped one from S3 with ranged GETs; store the tiles on S3."""
    bucket = s3_server.create_bucket("hubcat-tiling-test")
    client = s3_server.client()
    name = "drizzle_reference_square_image_acs-hrc_f606w_ngc104.fits"
    client.upload_file(str(hst_dir / name), "hubcat-tiling-test", f"hst/{name}")
    gz = "abell_2744_cd_galaxy_f105w.fits.gz"
    client.upload_file(str(hst_dir / gz), "hubcat-tiling-test", f"hst/{gz}")
    cfg = TilingConfig(zooms=(1,), unit_size=4)
    remote = TileStore.create(f"{bucket}/stores/t1", cfg)
    local = TileStore.create(tmp_path / "local", cfg)
    for key in (name, gz):
        remote.add_mosaic(f"{bucket}/hst/{key}")
        local.add_mosaic(hst_dir / key)
    a, b = remote.metadata(), local.metadata()
    assert list(a["tile_id"]) == list(b["tile_id"])
    assert list(a["tile_sha256"]) == list(b["tile_sha256"])
    assert a["source"].str.startswith("s3://hubcat-tiling-test/hst/").all()
    for ref in TileStore.open(f"{bucket}/stores/t1").units():
        ids, tiles = TileStore.open(f"{bucket}/stores/t1").read_unit(ref.unit_key)
        np.testing.assert_array_equal(tiles[0], local.read(ids[0]))


def test_cli_tile(tmp_path, capsys, hst_dir):
    good = write_synthetic_mosaic(tmp_path / "good.fits", shape=(300, 300))
    store = tmp_path / "store"
    argv = ["tile", str(good), str(hst_dir / "j8bt06nyq_flt.fits"), "--store", str(store)]
    code = main([*argv, "--zooms", "1", "--min-coverage", "0.6", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 3
    assert "1 tiled" in out and "1 failed" in out and "_drz/_drc" in out
    assert TileStore.open(store).config.min_coverage == 0.6
    code = main(["tile", str(good), "--store", str(store), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["added"][0]["mosaics"][0]["status"] == "already present"
    code = main(["tile", str(good), "--store", str(store), "--zooms", "1,2"])
    assert code == 1
    assert "other tiling parameters" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tile", str(good), "--store", str(store), "--min-coverage", "2"])


def test_ctx_footprint_when_there_is_no_wht(tmp_path):
    path = write_synthetic_mosaic(tmp_path / "m.fits", shape=(300, 300))
    with fits.open(path) as hdul:
        sci = hdul["SCI"]
        ctx = np.zeros(sci.data.shape, np.int32)
        ctx[:, :150] = 1  # only the left half was observed
        ctx_hdu = fits.ImageHDU(ctx, header=sci.header, name="CTX")
        fits.HDUList([hdul[0].copy(), sci.copy(), ctx_hdu]).writeto(tmp_path / "ctx.fits")
    store = TileStore.create(tmp_path / "t", TilingConfig(zooms=(1,), min_coverage=0.25))
    store.add_mosaic(tmp_path / "ctx.fits")
    meta = store.metadata()
    assert store.mosaic_record(meta["mosaic_id"][0])["footprint"] == "CTX"
    row = meta[(meta["x0"] == 0) & (meta["y0"] == 0)].iloc[0]
    assert row.coverage == pytest.approx(150 * 224 / 224**2)
    _tile, mask = store.read(row.tile_id, mask=True)
    assert mask[:, :150].all() and not mask[:, 150:].any()
