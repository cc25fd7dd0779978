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
    """Draw the cutouts of ``results`` in a labelled grid; return the matplotlib Figure.

    The first panel is the query: the query image when one was given (``query=`` or an image
    query of :meth:`catalog.Catalogue.similar`), otherwise the first row (the query tile itself).
    Each panel is labelled with the tile id, its score (similarity, separation or anomaly) and
    zoom/filter.

    Parameters
    ----------
    cat : Catalogue
    results : astropy.table.Table
        A result of ``similar``, ``cone`` or ``anomalies``.
    ncols : int
        Panels per row.
    max_tiles : int
        At most this many rows of ``results`` are drawn.
    query : numpy.ndarray, optional
        An image to draw first (shape (H, W)).
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
    panels: list[tuple[np.ndarray, str]] = []
    if query is not None:
        panels.append((np.asarray(query), "query"))
    for i, tid in enumerate(ids):
        pixels = cat.tile(tid).pixels
        label = tid if len(tid) <= 18 else tid[:8] + "…" + tid[-8:]
        if score_col is not None:
            label += f"\n{score_col[:3]} {float(results[score_col][i]):.3f}"
        label += f"  z{int(results['zoom'][i])} {results['filter'][i] if 'filter' in results.colnames else ''}"
        if i == 0 and query is None and score_col == "similarity":
            label = "query: " + label
        panels.append((pixels, label))
    if not panels:
        msg = "the result table is empty: nothing to show"
        raise QueryError(msg)
    ncols = max(1, min(ncols, len(panels)))
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(
        nrows, ncols, figsize=figsize or (2.4 * ncols, 2.6 * nrows), squeeze=False
    )
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (pixels, label) in zip(axes.ravel(), panels, strict=False):
        ax.imshow(pixels, origin="lower", cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(label, fontsize=7)
    fig.suptitle(str(results.meta.get("query", "")), fontsize=9)
    fig.tight_layout()
    return fig


def project_2d(
    vectors: np.ndarray, method: str | None = None, *, seed: int = 0
) -> tuple[np.ndarray, str]:
    """2-D coordinates of ``vectors`` with UMAP (if installed) or PCA; return (coords, method)."""
    x = np.asarray(vectors, dtype=np.float64)
    if method is None:
        try:
            import umap

            method = "umap"
        except ImportError:
            method = "pca"
    if method == "umap":
        try:
            import umap
        except ImportError:
            msg = "method='umap' needs the umap-learn package; install it or use method='pca'"
            raise QueryError(msg) from None
        coords = umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
        return np.asarray(coords), "umap"
    if method != "pca":
        msg = f"unknown map method {method!r}; choose 'umap' or 'pca'"
        raise QueryError(msg)
    centred = x - x.mean(axis=0)
    if len(x) < 2:
        return np.zeros((len(x), 2)), "pca"
    _u, _s, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:2]
    # fix the sign of each axis so maps are reproducible
    signs = np.sign(comps[np.arange(len(comps)), np.argmax(np.abs(comps), axis=1)])
    coords = centred @ (comps * signs[:, None]).T
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
        Projection; default UMAP when ``umap-learn`` is installed, else PCA.
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
