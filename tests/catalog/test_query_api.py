"""The notebook API beyond tile queries: image and FITS queries, anomalies, pictures, export."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from catalog import Catalogue, QueryError, export, prepare_image
from catalog._embed import MAX_INVALID

matplotlib.use("Agg")


def test_query_array_of_another_size_is_resampled(cat):
    tid = cat.metadata()["tile_id"][1]
    pixels = cat.tile(tid).pixels
    # a 2x larger version of the tile (nearest-neighbour) is shrunk back to 224 by area average
    big = np.kron(pixels, np.ones((2, 2), dtype=np.float32))
    res = cat.similar(big, k=2)
    assert res["tile_id"][0] == tid and res["similarity"][0] > 0.99
    # a non-square image is centre-cropped to its largest square
    wide = np.pad(pixels, ((0, 0), (40, 40)))
    assert prepare_image(wide).shape == (224, 224)
    np.testing.assert_array_equal(prepare_image(wide), pixels)


def test_query_with_nans(cat):
    tid = cat.metadata()["tile_id"][2]
    pixels = cat.tile(tid).pixels.copy()
    pixels[:20, :20] = np.nan  # a little outside the footprint: treated as masked
    res = cat.similar(pixels, k=1)
    assert res["tile_id"][0] == tid
    mostly_nan = np.full((224, 224), np.nan, dtype=np.float32)
    mostly_nan[:50] = 0.5
    with pytest.raises(QueryError, match="NaN or infinite"):
        cat.similar(mostly_nan, k=1)
    assert MAX_INVALID == 0.5


def test_bad_query_images(cat):
    with pytest.raises(QueryError, match="at least 16x16"):
        cat.similar(np.zeros((8, 8), dtype=np.float32))
    with pytest.raises(QueryError, match="2-D"):
        cat.similar(np.zeros((3, 64, 64), dtype=np.float32))
    with pytest.raises(QueryError, match="cannot query with a dict"):
        cat.similar({"ra": 1})
    with pytest.raises(QueryError, match="does not exist"):
        cat.similar("/no/such/image.fits")
    with pytest.raises(QueryError, match="shape"):
        cat.similar(np.ones(7, dtype=np.float32))


def test_fits_query_in_source_units(cat, hst_dir, tmp_path):
    """A FITS cutout in electrons/s is stretched like the tiler does and finds its tile."""
    meta = cat.metadata()
    row = meta[(meta["zoom"] == 1) & meta["source"].str.endswith("mpdaf_HST-HDFS.fits")].iloc[0]
    with fits.open(hst_dir / "mpdaf_HST-HDFS.fits") as hdul:
        hdu = next(h for h in hdul if h.is_image and h.data is not None and h.data.ndim == 2)
        y0, x0 = int(row["y0"]), int(row["x0"])
        cut = np.array(hdu.data[y0 : y0 + 224, x0 : x0 + 224], dtype=np.float32)
    path = tmp_path / "cutout.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(cut, name="SCI")]).writeto(path)
    res = cat.similar(str(path), k=3)
    assert res["tile_id"][0] == row["tile_id"]
    assert res.meta["query"].startswith("FITS cutout.fits[SCI]")
    with fits.open(path) as hdul:
        assert cat.similar(hdul["SCI"], k=1)["tile_id"][0] == row["tile_id"]


def test_vector_query(cat):
    vec = cat.vectors()[3]
    res = cat.similar(np.array(vec), k=2)
    assert res["tile_id"][0] == cat.metadata()["tile_id"][3]


def test_anomalies_score_is_distance_to_kth_neighbour(cat):
    k = 3
    res = cat.anomalies(4, k=k)
    assert len(res) == 4 and "anomaly" in res.colnames
    x = cat.vectors().astype(np.float64)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    kth = np.sort(sims, axis=1)[:, ::-1][:, k - 1]
    expected = 1.0 - kth
    order = np.argsort(-expected, kind="stable")[:4]
    np.testing.assert_allclose(np.asarray(res["anomaly"]), expected[order], atol=1e-5)
    assert set(res["row"]) == set(order)
    zoom2 = cat.anomalies(2, k=k, zoom=2)
    assert np.all(np.asarray(zoom2["zoom"]) == 2)


def test_show_and_map(cat):
    tid = cat.metadata()["tile_id"][0]
    res = cat.similar(tid, k=4)
    fig = cat.show(res, ncols=2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 4 and titles[0].startswith("query: ")
    img_query = cat.similar(np.rot90(cat.tile(tid).pixels), k=3)
    fig2 = cat.show(img_query)
    assert fig2.axes[0].get_title() == "query"
    assert len([ax for ax in fig2.axes if ax.images]) == 4
    fig3, coords = cat.map("filter", method="pca")
    assert fig3.axes[0].get_xlabel() == "PCA 1"
    assert len(coords) == len(cat) and np.isfinite(coords[["x", "y"]].to_numpy()).all()
    # PCA: the first axis carries at least as much variance as the second
    assert coords["x"].var() >= coords["y"].var()
    with pytest.raises(QueryError, match="not a metadata column"):
        cat.map("colour")
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.mark.parametrize("suffix", [".parquet", ".vot", ".csv", ".ecsv", ".fits", ".json"])
def test_export_round_trip(cat, tmp_path, suffix):
    res = cat.similar(cat.metadata()["tile_id"][0], k=3)
    path = export(res, tmp_path / f"hits{suffix}")
    if suffix == ".json":
        rows = json.loads((tmp_path / "hits.json").read_text())["rows"]
        assert [r["tile_id"] for r in rows] == list(res["tile_id"])
        return
    back = Table.read(path, format={".vot": "votable", ".csv": "ascii.csv"}.get(suffix))
    ids = [t.decode() if isinstance(t, bytes) else str(t) for t in back["tile_id"]]
    assert ids == list(res["tile_id"])
    np.testing.assert_allclose(
        np.asarray(back["similarity"]), np.asarray(res["similarity"]), rtol=1e-6
    )
    with pytest.raises(QueryError, match="export format"):
        export(res, tmp_path / "hits.xyz")


def test_open_with_explicit_tile_store(catalogue_dir, stores):
    cat = Catalogue.open(catalogue_dir, tile_store=stores["ngc"][0])
    ngc_tile = stores["ngc"][0].metadata()["tile_id"][0]
    assert cat.tile(ngc_tile).pixels.shape == (224, 224)
    main_tile = stores["main"][0].metadata()["tile_id"][0]
    assert cat.tile(main_tile).pixels.shape == (224, 224)
    assert cat.tile_store.uri == stores["ngc"][0].uri
