"""Pictures of a catalogue: a grid of result cutouts, and a 2-D map of the embedding space."""

from __future__ import annotations

import numpy as np
import pandas as pd
from astropy.table import Table

from catalog.errors import QueryError

__all__ = ["embedding_map", "project_2d", "show_results"]


def show_results(
    cat, results: Table, *, ncols: int = 5, max_tiles: int = 20, figsize=None, query=None
):
    """Draw the cutouts of ``results`` on their sky coordinates; return the matplotlib Figure.

    Each tile is drawn on an astropy ``WCSAxes`` of its own WCS: RA/Dec ticks (ICRS,
    sexagesimal), a scale bar and north/east arrows. The first panel is the query: the query
    image when one was given (``query=`` or an image query of
    :meth:`catalog.Catalogue.similar`; plain pixel axes, it has no WCS), otherwise the first row
    (the query tile itself). Each title gives the tile id, its score (similarity, separation or
    anomaly), zoom and filter.

    Parameters
    ----------
    cat : Catalogue
    results : astropy.table.Table
        A result of ``similar``, ``cone`` or ``anomalies``.
    ncols : int
        Panels per row.
    max_tiles : int
        At most this many rows of ``results`` are drawn.
    figsize : tuple of float, optional
        Figure size in inches (default: 2.6 x 2.9 per panel).
    query : numpy.ndarray, optional
        An image to draw first (shape (H, W)).

    Raises
    ------
    QueryError
        A table without ``tile_id``, or an empty one.
    """
    import matplotlib.pyplot as plt

    if "tile_id" not in results.colnames:
        msg = "show() needs a result table with a tile_id column (from similar, cone or anomalies)"
        raise QueryError(msg)
    query = query if query is not None else getattr(results, "_hubcat_query_image", None)
    ids = [str(t) for t in results["tile_id"][:max_tiles]]
    score_col = next(
        (c for c in ("similarity", "separation", "anomaly") if c in results.colnames), None
    )
    panels: list[tuple[np.ndarray, object, str]] = []
    if query is not None:
        panels.append((np.asarray(query), None, "query"))
    for i, tid in enumerate(ids):
        pixels, wcs = cat.tile(tid)
        label = tid if len(tid) <= 22 else tid[:10] + "…" + tid[-10:]
        if score_col is not None:
            label += f"\n{score_col[:3]} {float(results[score_col][i]):.3f}"
        band = results["filter"][i] if "filter" in results.colnames else ""
        label += f"  z{int(results['zoom'][i])} {band}"
        if i == 0 and query is None and score_col == "similarity":
            label = "query: " + label
        panels.append((pixels, wcs, label))
    if not panels:
        msg = "the result table is empty: nothing to show"
        raise QueryError(msg)
    ncols = max(1, min(ncols, len(panels)))
    nrows = (len(panels) + ncols - 1) // ncols
    fig = plt.figure(figsize=figsize or (2.6 * ncols, 2.9 * nrows))
    for i, (pixels, wcs, label) in enumerate(panels):
        if wcs is None:
            ax = fig.add_subplot(nrows, ncols, i + 1)
            ax.set_axis_off()
        else:
            ax = fig.add_subplot(nrows, ncols, i + 1, projection=wcs)
            _sky_axes(ax)
        ax.imshow(pixels, origin="lower", cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        if wcs is not None:
            _scale_bar(ax, wcs, pixels.shape)
            _compass(ax, wcs, pixels.shape)
        ax.set_title(label, fontsize=7)
    fig.suptitle(str(results.meta.get("query", "")), fontsize=9)
    fig.tight_layout()
    return fig


def _sky_axes(ax) -> None:
    """RA/Dec ticks in small sexagesimal labels, two per axis (a tile is a few arcsec wide)."""
    ra, dec = ax.coords[0], ax.coords[1]
    ra.set_major_formatter("hh:mm:ss.s")
    dec.set_major_formatter("dd:mm:ss")
    for coord, name in ((ra, "RA"), (dec, "Dec")):
        coord.set_ticks(number=2, size=3)
        coord.set_ticklabel(size=5)
        coord.set_axislabel(f"{name} (ICRS)", size=6, minpad=0.3)
    ax.coords.grid(color="white", alpha=0.25, linestyle=":", linewidth=0.6)


def _nice_length(arcsec: float) -> float:
    """A round length (1, 2 or 5 x 10^n arcsec) of at most ``arcsec``."""
    exponent = np.floor(np.log10(arcsec))
    for step in (5, 2, 1):
        if step * 10**exponent <= arcsec:
            return float(step * 10**exponent)
    return float(10**exponent)


def _pixel_scale_arcsec(wcs) -> float:
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0)


def _scale_bar(ax, wcs, shape: tuple[int, ...]) -> None:
    """A scale bar of a round number of arcsec, about a quarter of the tile wide."""
    from astropy import units as u
    from astropy.visualization.wcsaxes import add_scalebar

    scale = _pixel_scale_arcsec(wcs)
    length = _nice_length(0.3 * shape[1] * scale)
    text = f'{length:g}"' if length < 60 else f"{length / 60:g}'"
    add_scalebar(ax, length * u.arcsec, label=text, color="yellow", fontproperties={"size": 6})


def _compass(ax, wcs, shape: tuple[int, ...]) -> None:
    """North and east arrows from the WCS, in the top-right corner of the tile."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astropy.wcs.utils import pixel_to_skycoord, skycoord_to_pixel

    ny, nx = shape[:2]
    x0, y0 = 0.82 * nx, 0.72 * ny
    centre = pixel_to_skycoord(x0, y0, wcs)
    arm = 0.12 * min(nx, ny)
    step = arm * _pixel_scale_arcsec(wcs) * u.arcsec
    north = SkyCoord(centre.ra, centre.dec + step, frame=centre.frame)
    east = centre.directional_offset_by(90 * u.deg, step)
    for target, name in ((north, "N"), (east, "E")):
        tx, ty = (float(v) for v in skycoord_to_pixel(target, wcs))
        dx, dy = tx - x0, ty - y0
        norm = np.hypot(dx, dy) or 1.0
        dx, dy = dx / norm * arm, dy / norm * arm
        ax.annotate(
            "",
            xy=(x0 + dx, y0 + dy),
            xytext=(x0, y0),
            arrowprops={"arrowstyle": "->", "color": "cyan", "lw": 1.0},
        )
        ax.text(
            x0 + 1.35 * dx, y0 + 1.35 * dy, name, color="cyan", fontsize=6, ha="center", va="center"
        )


def _import_umap():
    """``import umap``, without its notice that the optional ParametricUMAP (TensorFlow) is
    unavailable: hubcat does not use it."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ImportWarning, message=".*ParametricUMAP.*")
        import umap
    return umap


def project_2d(
    vectors: np.ndarray, method: str | None = None, *, seed: int = 0
) -> tuple[np.ndarray, str]:
    """2-D coordinates of ``vectors`` with UMAP (umap-learn) or PCA (scikit-learn).

    Parameters
    ----------
    vectors : numpy.ndarray
        Shape (N, D).
    method : {"umap", "pca"} or None
        None: UMAP, or PCA with a :class:`catalog.CatalogWarning` when umap-learn is missing
        or there are too few vectors for a neighbour graph (fewer than 4).
    seed : int
        Random state of UMAP.

    Returns
    -------
    coords : numpy.ndarray
        Shape (N, 2).
    method : str
        The projection used.
    """
    import warnings

    from catalog.errors import CatalogWarning

    x = np.asarray(vectors, dtype=np.float64)
    if method is None:
        method = "umap"
        if len(x) < 4:
            method = "pca"
        else:
            try:
                _import_umap()
            except ImportError:
                msg = "umap-learn is not installed: the map uses PCA (pip install umap-learn)"
                warnings.warn(msg, CatalogWarning, stacklevel=3)
                method = "pca"
    if method == "umap":
        try:
            umap = _import_umap()
        except ImportError:
            msg = "method='umap' needs the umap-learn package; install it or use method='pca'"
            raise QueryError(msg) from None
        if len(x) < 4:
            msg = f"UMAP needs at least 4 tiles; this map has {len(x)}: use method='pca'"
            raise QueryError(msg)
        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=min(15, len(x) - 1),
            random_state=seed,
            n_jobs=1,  # what a random_state implies; said so that umap does not warn
        )
        with warnings.catch_warnings():
            # umap on a tiny sample: spectral initialisation falls back, harmlessly
            warnings.filterwarnings(
                "ignore", message=".*(spectral|disconnection|Graph is not fully).*"
            )
            coords = reducer.fit_transform(x)
        return np.asarray(coords, dtype=np.float64), "umap"
    if method != "pca":
        msg = f"unknown map method {method!r}; choose 'umap' or 'pca'"
        raise QueryError(msg)
    if len(x) < 2:
        return np.zeros((len(x), 2)), "pca"
    from sklearn.decomposition import PCA

    n = min(2, x.shape[0], x.shape[1])
    pca = PCA(n_components=n, svd_solver="full")
    coords = pca.fit_transform(x)
    # fix the sign of each axis (largest loading positive) so maps are reproducible
    comps = pca.components_
    signs = np.sign(comps[np.arange(n), np.argmax(np.abs(comps), axis=1)])
    coords = coords * signs
    if coords.shape[1] < 2:
        coords = np.column_stack([coords, np.zeros(len(coords))])
    return coords, "pca"


def embedding_map(
    cat, *, color_by: str = "instrument", method: str | None = None, ax=None, sample: int = 50_000
):
    """Scatter the catalogue's embedding space in 2-D, coloured by a metadata column.

    Parameters
    ----------
    cat : Catalogue
    color_by : str
        Metadata column: categorical columns get one colour per value (legend), numeric ones
        a colour bar.
    method : {"umap", "pca"} or None
        Projection; default UMAP (``umap-learn``; PCA with a warning when it is missing).
    ax : matplotlib Axes, optional
    sample : int
        At most this many tiles (a seeded random subset) are projected.

    Returns
    -------
    figure : matplotlib.figure.Figure
    coords : pandas.DataFrame
        ``tile_id``, ``x``, ``y`` and the ``color_by`` column of the projected tiles.
    """
    import matplotlib.pyplot as plt

    meta = cat._metadata()
    if color_by not in meta.columns:
        msg = f"color_by={color_by!r} is not a metadata column; choose one of {list(meta.columns)}"
        raise QueryError(msg)
    rows = np.arange(len(meta))
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(cat.config.seed).choice(rows, sample, replace=False))
    coords, used = project_2d(cat._unit_vectors()[rows], method, seed=cat.config.seed)
    values = meta[color_by].iloc[rows]
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 5))
    else:
        fig = ax.figure
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > 12:
        sc = ax.scatter(coords[:, 0], coords[:, 1], c=values.to_numpy(float), s=6, cmap="viridis")
        fig.colorbar(sc, ax=ax, label=color_by)
    else:
        labels = values.astype(str).replace("", "(unknown)")
        for name in sorted(labels.unique()):
            sel = (labels == name).to_numpy()
            ax.scatter(coords[sel, 0], coords[sel, 1], s=6, label=name)
        ax.legend(title=color_by, fontsize=7, markerscale=2)
    ax.set_xlabel(f"{used.upper()} 1")
    ax.set_ylabel(f"{used.upper()} 2")
    ax.set_title(f"embedding map of {len(rows)} tiles ({used})")
    out = meta[["tile_id"]].iloc[rows].copy()
    out["x"], out["y"] = coords[:, 0], coords[:, 1]
    out[color_by] = values.to_numpy()
    return fig, out.reset_index(drop=True)
