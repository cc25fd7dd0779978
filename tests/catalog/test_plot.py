"""Pictures of a catalogue: cutouts on their sky coordinates, and the embedding map."""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pytest

from catalog import CatalogWarning, QueryError, _plot

matplotlib.use("Agg")


def test_cutouts_are_drawn_on_wcs_axes_with_scale_bar_and_compass(cat):
    import matplotlib.pyplot as plt
    from astropy.visualization.wcsaxes import WCSAxes
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    res = cat.similar(cat.metadata()["tile_id"][0], k=3)
    fig = cat.show(res, ncols=3)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3 and all(isinstance(ax, WCSAxes) for ax in panels)
    for ax, tid in zip(panels, res["tile_id"], strict=True):
        ra, dec = ax.coords[0], ax.coords[1]
        assert (ra.coord_type, dec.coord_type) == ("longitude", "latitude")
        assert ra.get_axislabel() == "RA (ICRS)" and dec.get_axislabel() == "Dec (ICRS)"
        wcs = cat.tile(str(tid)).wcs
        assert ax.wcs.wcs.compare(wcs.wcs)  # the tile's own WCS
        bars = [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]
        assert len(bars) == 1
        label = bars[0].txt_label.get_text()
        assert label.endswith(('"', "'"))
        assert sorted(t.get_text() for t in ax.texts if t.get_text()) == ["E", "N"]
    plt.close(fig)


def test_compass_points_north_and_east_on_the_sky(cat):
    """The N arrow points to higher Dec, the E arrow to higher RA, as the WCS says."""
    import matplotlib.pyplot as plt
    from astropy.wcs.utils import pixel_to_skycoord

    tid = str(cat.metadata()["tile_id"][0])
    pixels, wcs = cat.tile(tid)
    fig = plt.figure()
    ax = fig.add_subplot(projection=wcs)
    _plot._compass(ax, wcs, pixels.shape)
    arrows = {t.get_text(): t.get_position() for t in ax.texts if t.get_text()}
    base = np.array([0.82 * pixels.shape[1], 0.72 * pixels.shape[0]])
    centre = pixel_to_skycoord(*base, wcs)
    north = pixel_to_skycoord(*arrows["N"], wcs)
    east = pixel_to_skycoord(*arrows["E"], wcs)
    assert north.dec > centre.dec and abs(centre.position_angle(north).deg) % 360 < 1
    assert abs(centre.position_angle(east).deg - 90) < 1
    plt.close(fig)


def test_map_uses_umap_and_pca_is_scikit_learns(cat):
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: umap-learn is installed
        fig, coords = cat.map("filter")
    assert fig.axes[0].get_xlabel() == "UMAP 1" and len(coords) == len(cat)
    assert np.isfinite(coords[["x", "y"]].to_numpy()).all()
    vectors = cat.vectors().astype(np.float64)
    xy, used = _plot.project_2d(vectors, "pca")
    want = PCA(n_components=2, svd_solver="full").fit_transform(vectors)
    assert used == "pca"
    np.testing.assert_allclose(np.abs(xy), np.abs(want), rtol=1e-6, atol=1e-9)
    plt.close("all")


def test_map_without_umap_says_it_uses_pca(cat, monkeypatch):
    def missing():
        raise ImportError("No module named 'umap'")

    monkeypatch.setattr(_plot, "_import_umap", missing)
    with pytest.warns(CatalogWarning, match="umap-learn is not installed"):
        _coords, used = _plot.project_2d(cat.vectors(), None)
    assert used == "pca"
    with pytest.raises(QueryError, match="needs the umap-learn package"):
        _plot.project_2d(cat.vectors(), "umap")
