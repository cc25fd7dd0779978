"""The catalogue's queries: similar tiles, cone search, anomalies (mixed into ``Catalogue``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from catalog import _index
from catalog._metashards import cone_ranges, is_sharded, read_cone_candidates, superseded_rows
from catalog._query import centres, filter_mask, result_table, to_angle
from catalog.errors import CatalogWarning, QueryError

__all__ = ["SMALL_SELECTION", "SearchMixin"]

#: A filtered query over at most this many rows of a compressed index reads those rows' vectors
#: and ranks them exactly (a selection this small may not fill ``k`` from the visited IVF cells).
SMALL_SELECTION = 20_000


class SearchMixin:
    """Query methods of :class:`catalog.Catalogue` (which supplies the data access they use)."""

    def superseded(self) -> np.ndarray:
        """Which rows a later version replaced, bool [N] (see ``docs/provenance.md``).

        A unit reopened after its volunteer was caught, and recomputed, comes back in the next
        version as new rows whose ``supersedes`` column (and Merkle leaf) names the row each one
        replaces; the old rows stay in the append-only log but no query returns them.

        Returns
        -------
        numpy.ndarray
            bool [N], in leaf order: True for a row some later row's ``supersedes`` names.
            Cached and shared between calls: do not modify it.
        """
        if self._superseded is None:
            meta = self._metadata()
            out = np.zeros(len(meta), dtype=bool)
            if "supersedes" in meta.columns:
                old = meta["supersedes"].to_numpy()
                old = old[(old >= 0) & (old < len(meta))].astype(np.int64)
                out[old] = True
            self._superseded = out
        return self._superseded

    def _row_mask(self, filters: dict) -> np.ndarray | None:
        """Rows that pass ``filters`` and are not superseded (``None``: every row)."""
        meta = self._metadata()
        mask = filter_mask(meta, self._centres(), **filters) if filters else None
        gone = self.superseded()
        if gone.any():
            mask = ~gone if mask is None else mask & ~gone
        return mask

    def _unit_rows(self, rows: list[int]) -> np.ndarray:
        """Unit vectors of ``rows``; a compressed catalogue reads only those rows' vectors."""
        if getattr(self._index, "kind", None) == "ivfpq_rerank" and self._unit is None:
            return _index.normalise(
                self._index.rows.rows(np.asarray(rows)), what=f"vectors of {self.uri}"
            )
        return self._unit_vectors()[rows]

    def _search(
        self, query: np.ndarray, k: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest rows of one unit-norm query vector, optionally restricted to ``mask``."""
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        if getattr(self._index, "kind", None) == "ivfpq_rerank":
            if mask is not None and mask.sum() <= SMALL_SELECTION:  # exact over those rows alone
                rows = np.flatnonzero(mask)
                vec = _index.normalise(self._index.rows.rows(rows), what=f"vectors of {self.uri}")
                sims, sub = _index.exact_search(vec, q, k)
                return sims[0], rows[sub[0]]
            # codes select the candidates (only rows in ``mask``), their stored vectors rank them
            sims, ids = self._index.search(q, k, allowed=mask)
            keep = ids[0] >= 0
            return sims[0][keep], ids[0][keep]
        gone = self.superseded()
        if (
            mask is not None and gone.any() and np.array_equal(mask, ~gone)
        ):  # only superseded rows left out
            extra = int(gone.sum())
            sims, ids = _index.search_index(self._index, q, k + extra, self.config)
            keep = (ids[0] >= 0) & ~gone[np.clip(ids[0], 0, None)]
            return sims[0][keep][:k], ids[0][keep][:k]
        if mask is None:
            sims, ids = _index.search_index(self._index, q, k, self.config)
            keep = ids[0] >= 0
            return sims[0][keep], ids[0][keep]
        rows = np.flatnonzero(mask)
        sims, sub = _index.exact_search(self._unit_vectors()[rows], q, k)
        return sims[0], rows[sub[0]]

    def similar(
        self, query: object, k: int = 10, *, stretch: bool | None = None, **filters: object
    ) -> Table:
        """The ``k`` tiles most similar to ``query`` (cosine similarity of their embeddings).

        Parameters
        ----------
        query : str, SkyCoord, numpy.ndarray, path or FITS HDU
            - a ``tile_id`` of this catalogue;
            - a ``SkyCoord``: the tile whose centre is nearest (at ``zoom=`` if given, else the
              finest zoom), provided the position is inside that tile;
            - a 2-D array of sky pixels, or a FITS file / HDU / HDUList: embedded on the fly with
              the catalogue's own model, weights and preprocessing (see :meth:`embed`);
            - a 1-D array of length D: an embedding vector.
        k : int
            Number of results (clipped, with a :class:`CatalogWarning`, to the number of tiles
            that pass the filters).
        stretch : bool or None
            For image queries: apply the tiler's asinh stretch (default: FITS always; arrays
            only when some value lies outside [0, 1], see :mod:`catalog._embed`).
        **filters
            ``instrument=``, ``filter=``, ``zoom=``, ``date=(start, end)``, ``proposal=``,
            ``region=(SkyCoord, radius)``; each one value or a list (see
            :func:`catalog._query.filter_mask`). With filters the search is exact over the
            matching rows.

        Returns
        -------
        astropy.table.Table
            Columns ``tile_id``, ``similarity`` (cosine, 1 is identical), ``ra``, ``dec`` (deg),
            ``zoom``, ``instrument``, ``filter``, ``date``, ``source``, then ``proposal_id``,
            ``detector``, ``pixel_scale``, ``mosaic_id``, ``row``. For a tile query the first
            row is the query tile itself (when it passes the filters). ``meta`` describes the
            query; an empty result carries the reason in ``meta["message"]``.

        Raises
        ------
        UnknownTileError
            Unknown ``tile_id``.
        QueryError
            ``k`` < 1, an unusable image or filter.
        ModelUnavailableError
            An image query when the catalogue's model cannot be loaded here.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            msg = f"k={k!r} must be a positive integer (the number of neighbours to return)"
            raise QueryError(msg)
        k = int(k)
        meta = self._metadata()
        mask = self._row_mask(filters)
        vector, self_row, description, extra = self._resolve(query, filters.get("zoom"), stretch)
        info = {"query": description, "k": k, **self._table_info()}
        info["index"] = self.manifest["index"]["type"] if mask is None else "flat (filtered)"
        info.update({f"filter_{key}": str(v) for key, v in filters.items() if v is not None})
        query_image = extra.pop("_query_image", None)
        info.update(extra)
        if vector is None:  # a position outside every footprint
            return self._empty(info)
        available = len(meta) if mask is None else int(mask.sum())
        if available == 0:
            info["message"] = f"no tile of {self.uri} passes the filters {info_filters(filters)}"
            warnings.warn(info["message"], CatalogWarning, stacklevel=2)
            return self._empty(info)
        if k > available:
            info["message"] = (
                f"k={k} is larger than the {available} tile(s) that can match; returning all of them"
            )
            warnings.warn(info["message"], CatalogWarning, stacklevel=2)
            k = available
        sims, rows = self._search(vector, k, mask)
        if self_row is not None and (mask is None or mask[self_row]):
            # the query tile first: exact duplicates may tie with it
            keep = rows != self_row
            own = float(np.dot(vector, vector))  # the query is that row's own unit vector
            rows = np.concatenate([[self_row], rows[keep]])[:k]
            sims = np.concatenate([[own], sims[keep]])[:k]
        table = result_table(meta, rows, sims, "similarity")
        table.meta.update(info)
        if query_image is not None:
            table._hubcat_query_image = query_image  # drawn first by show()
        return table

    def _table_info(self) -> dict:
        """What every result table's ``meta`` says of the catalogue (exported as VOTable INFO)."""
        prov = self.manifest.get("provenance") or {}
        return {
            "catalogue": self.uri,
            "version": self.version,
            "tree_size": int(prov.get("tree_size", len(self))),
            "merkle_root": str(prov.get("root", "")),
        }

    def _empty(self, info: dict) -> Table:
        table = result_table(self._metadata(), np.zeros(0, np.int64), np.zeros(0), "similarity")
        table.meta.update(info)
        return table

    def _resolve(
        self, query: object, zoom: object, stretch: bool | None = None
    ) -> tuple[np.ndarray | None, int | None, str, dict]:
        """(unit query vector or None, own row or None, description, extra meta)."""
        if isinstance(query, str) and not _looks_like_fits(query):
            row = self.row_of(query)
            return self._unit_rows([row])[0], row, f"tile {query}", {}
        if isinstance(query, SkyCoord):
            row, message = self.nearest_tile(query, zoom=zoom)
            if row is None:
                warnings.warn(message, CatalogWarning, stacklevel=3)
                return None, None, f"position {_fmt_coord(query)}", {"message": message}
            tid = str(self._metadata()["tile_id"].iloc[row])
            return self._unit_rows([row])[0], row, f"tile {tid} at {_fmt_coord(query)}", {}
        if isinstance(query, np.ndarray) and query.ndim == 1:
            d = int(self.manifest["model"]["dim"])
            if query.shape != (d,):
                msg = f"a vector query must have shape ({d},) (this catalogue's dimension); got {query.shape}"
                raise QueryError(msg)
            return _index.normalise(query, what="query vector")[0], None, "vector", {}
        from catalog._embed import embed_query

        vector, description, tile = embed_query(self, query, stretch=stretch)
        return vector, None, description, {"_query_image": tile}

    def nearest_tile(self, coord: SkyCoord, *, zoom: object = None) -> tuple[int | None, str]:
        """Row of the tile whose centre is nearest to ``coord`` at ``zoom`` (default: finest).

        Superseded rows are never returned.

        Parameters
        ----------
        coord : SkyCoord
            One scalar position (any frame astropy can transform to ICRS).
        zoom : int or list of int, optional
            Zoom level(s) to consider; default the finest (smallest) zoom in the catalogue.

        Returns
        -------
        tuple of (int or None, str)
            ``(row, "")`` for the nearest tile; ``(None, message)`` when ``coord`` falls outside
            every tile at that zoom (its distance to the nearest centre exceeds that tile's
            half-diagonal, from ``pixel_scale`` and ``tile_size``), the message saying how far
            the nearest centre is and what to try instead.

        Raises
        ------
        QueryError
            ``coord`` is not one scalar SkyCoord, or the catalogue has no tile at ``zoom``.
        """
        if not isinstance(coord, SkyCoord) or not coord.isscalar:
            msg = f"the position {coord!r} must be one scalar SkyCoord"
            raise QueryError(msg)
        meta = self._metadata()
        if zoom is None:
            zoom = int(meta["zoom"].min())
        zooms = [int(z) for z in (zoom if isinstance(zoom, list | tuple) else [zoom])]
        rows = np.flatnonzero(meta["zoom"].isin(zooms).to_numpy() & ~self.superseded())
        if rows.size == 0:
            present = sorted(int(z) for z in meta["zoom"].unique())
            msg = f"the catalogue has no tile at zoom {zoom!r}; its zooms are {present}"
            raise QueryError(msg)
        sep = self._centres()[rows].separation(coord).to(u.arcsec).value
        best = int(np.argmin(sep))
        row = int(rows[best])
        half_diag = _tile_half_diagonal_arcsec(meta.iloc[row])
        if not sep[best] <= half_diag:
            msg = (
                f"{_fmt_coord(coord)} is outside every tile footprint of {self.uri} at zoom {zooms}: "
                f"the nearest tile centre is {sep[best]:.1f} arcsec away; use cat.cone(coord, radius) "
                "to look further, or cat.metadata()[['ra', 'dec']] to see the coverage"
            )
            return None, msg
        return row, ""

    def cone(self, coord: SkyCoord, radius: object, **filters: object) -> Table:
        """Tiles whose centres lie within ``radius`` of ``coord`` (astropy ``separation``).

        Parameters
        ----------
        coord : SkyCoord
            Centre of the cone (any frame astropy can transform to ICRS).
        radius : Quantity or str
            Angular radius with its unit (``30 * u.arcsec``, ``"30 arcsec"``); a bare number is
            refused with a :class:`QueryError` (see :func:`catalog._query.to_angle`).
        **filters
            As in :meth:`similar`.

        Returns
        -------
        astropy.table.Table
            Same columns as :meth:`similar` with ``separation`` (arcsec) instead of
            ``similarity``, nearest first. An empty result carries the reason in
            ``meta["message"]``.
        """
        if not isinstance(coord, SkyCoord) or not coord.isscalar:
            msg = f"cone centre {coord!r} must be one scalar SkyCoord"
            raise QueryError(msg)
        radius = to_angle(radius)
        if self._meta is None and is_sharded(self.manifest["segments"]):
            table = self._cone_from_row_groups(coord, radius, filters)
        else:
            meta = self._metadata()
            sep = self._centres().separation(coord)
            inside = (sep <= radius).astype(bool)
            mask = self._row_mask(filters)
            if mask is not None:
                inside &= mask
            rows = np.flatnonzero(inside)
            rows = rows[np.argsort(sep[rows].to_value(u.arcsec), kind="stable")]
            table = result_table(
                meta, rows, sep[rows].to(u.arcsec).value, "separation", unit=u.arcsec
            )
        table.meta.update(
            {"query": f"cone {_fmt_coord(coord)} r={radius.to(u.arcsec):.2f}", **self._table_info()}
        )
        if not len(table):
            table.meta["message"] = (
                f"no tile centre of {self.uri} lies within {radius.to(u.arcsec):.1f} of "
                f"{_fmt_coord(coord)}"
                + (f" with filters {info_filters(filters)}" if filters else "")
            )
        return table

    def _cone_from_row_groups(self, coord: SkyCoord, radius: u.Quantity, filters: dict) -> Table:
        """:meth:`cone` reading only the metadata row groups whose HEALPix range meets the cone."""
        icrs = coord.icrs
        ranges = cone_ranges(float(icrs.ra.deg), float(icrs.dec.deg), radius)
        where = f"catalogue {self.uri}"
        sub, _groups = read_cone_candidates(self.store, self.manifest["segments"], ranges, where)
        sep = centres(sub).separation(coord)
        inside = (sep <= radius).astype(bool)
        mask = filter_mask(sub, **filters) if filters else None
        if mask is not None:
            inside &= mask
        if self._superseded_ids is None:  # read once: a version's rows never change
            self._superseded_ids = superseded_rows(self.store, self.manifest["segments"], where)
        gone = self._superseded_ids
        if gone.size:
            inside &= ~np.isin(sub["leaf_index"].to_numpy(np.int64), gone)
        pos = np.flatnonzero(inside)
        pos = pos[np.argsort(sep[pos].to_value(u.arcsec), kind="stable")]
        table = result_table(sub, pos, sep[pos].to(u.arcsec).value, "separation", unit=u.arcsec)
        table["row"] = sub["leaf_index"].to_numpy(np.int64)[pos]
        return table

    def anomalies(self, n: int = 10, *, k: int | None = None, **filters: object) -> Table:
        """The ``n`` tiles least like any other: ranked by distance to their k-th neighbour.

        The score of a tile is ``1 - s_k``, where ``s_k`` is the cosine similarity to its k-th
        nearest other tile in the catalogue (``k`` defaults to ``config.anomaly_k``, 5): a tile
        with fewer than k close look-alikes scores high. It is robust to a tile having one
        near-duplicate (overlapping tiles, a zoom level) that a first-neighbour distance would
        not be. Scores use the catalogue's index and are cached per ``k``.

        Parameters
        ----------
        n : int
            Number of tiles to return (fewer if fewer pass the filters).
        k : int, optional
            Which neighbour's similarity scores a tile (default ``config.anomaly_k``).
        **filters
            As in :meth:`similar`; they select which tiles are ranked, while the scores still
            compare each tile against the whole catalogue. Superseded rows are left out.

        Returns
        -------
        astropy.table.Table
            Columns of :meth:`similar` with ``anomaly`` (0..2) instead of ``similarity``,
            highest first.

        Raises
        ------
        QueryError
            ``n`` < 1 or ``k`` < 0, or an unusable filter.
        """
        k = int(k or self.config.anomaly_k)
        if n < 1 or k < 1:
            msg = f"n={n!r} and k={k!r} must be positive integers"
            raise QueryError(msg)
        scores = self.anomaly_scores(k)
        meta = self._metadata()
        mask = self._row_mask(filters)
        rows = np.arange(len(meta)) if mask is None else np.flatnonzero(mask)
        order = rows[np.argsort(-scores[rows], kind="stable")][:n]
        table = result_table(meta, order, scores[order], "anomaly")
        table.meta.update({"query": f"anomalies k={k}", **self._table_info()})
        return table

    def anomaly_scores(self, k: int | None = None) -> np.ndarray:
        """Anomaly score of every row (see :meth:`anomalies`), float64 [N].

        Parameters
        ----------
        k : int, optional
            Which neighbour's cosine similarity ``s_k`` scores a tile (default
            ``config.anomaly_k``); a tile with fewer than ``k`` other neighbours in the index
            uses its farthest one.

        Returns
        -------
        numpy.ndarray
            float64 [N], in leaf order: ``1 - s_k``, from 0 (``k`` identical look-alikes) to 2;
            a tile with no other neighbour scores 2, and a one-row catalogue 0. Cached per
            ``k`` and shared between calls: do not modify it.
        """
        k = int(k or self.config.anomaly_k)
        if k not in self._anomaly_cache:
            x = self._unit_vectors()
            n = len(x)
            if n <= 1:
                self._anomaly_cache[k] = np.zeros(n)
                return self._anomaly_cache[k]
            kk = min(k + 1, n)
            sims = np.full(n, np.nan)
            batch = 4096
            for start in range(0, n, batch):
                q = x[start : start + batch]
                s, ids = _index.search_index(self._index, q, kk, self.config)
                own = ids == np.arange(start, start + len(q))[:, None]
                others = np.where(own | (ids < 0), -np.inf, s.astype(np.float64))
                others = -np.sort(-others, axis=1)  # descending; the tile itself last
                count = (~own & (ids >= 0)).sum(axis=1)
                col = np.clip(np.minimum(k, count) - 1, 0, kk - 1)
                kth = others[np.arange(len(q)), col]
                sims[start : start + len(q)] = np.where(count > 0, kth, -1.0)
            self._anomaly_cache[k] = 1.0 - sims
        return self._anomaly_cache[k]


# --------------------------------------------------------------------------- small helpers


def info_filters(filters: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in filters.items() if v is not None) or "(none)"


def _fmt_coord(coord: SkyCoord) -> str:
    c = coord.icrs
    return f"(ra={c.ra.deg:.6f}, dec={c.dec.deg:+.6f})"


def _tile_half_diagonal_arcsec(row: pd.Series) -> float:
    scale = float(row.get("pixel_scale", np.nan))
    size = float(row.get("tile_size", 224))
    if not np.isfinite(scale) or scale <= 0:
        return np.inf
    return size * scale * np.sqrt(2.0) / 2.0


def _looks_like_fits(text: str) -> bool:
    lower = text.lower()
    return lower.endswith((".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fz")) or (
        "/" in text and Path(text).is_file()
    )
