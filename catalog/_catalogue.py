"""The catalogue: a FAISS index, a parquet metadata table and a manifest, in one object store.

Layout under the catalogue's root (a local folder or an ``s3://`` prefix)::

    manifest.json                     the current version's manifest (written last, atomically)
    versions/000001/manifest.json     every version's manifest, never rewritten except to
    versions/000001/index.faiss       repair its index (``rebuild_index``); one index per version
    segments/000001/metadata.parquet  the rows a version added (append-only)
    segments/000001/vectors.f32       their vectors, float32 little-endian, row-major [n, D]
    provenance/...                    Merkle leaves and checkpoints (:mod:`catalog.provenance`)

A new version appends a segment, so earlier rows keep their row number, which is also their
Merkle leaf index, and every earlier version still opens (``Catalogue.open(uri, version=1)``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from catalog import _index
from catalog._config import CatalogConfig
from catalog._query import centres, filter_mask, result_table, to_angle
from catalog._supersede import class_of, recomputed_rows, supersedes_of
from catalog.errors import (
    CatalogError,
    CatalogNotFoundError,
    CatalogWarning,
    CorruptCatalogError,
    IncompatibleCatalogError,
    QueryError,
    UnknownTileError,
)
from embeddings import NORM_TOLERANCE, norm_error
from hubcat.errors import StoreNotFoundError
from hubcat.storage import ObjectStore, open_object_store

__all__ = ["FORMAT", "FORMAT_VERSION", "Catalogue", "TileCutout"]

log = logging.getLogger(__name__)

#: Name and layout version of the catalogue format this release writes and reads.
FORMAT = "hubcat-catalogue"
FORMAT_VERSION = 1

#: Metadata columns a catalogue needs from the tile store (more are kept when present).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "tile_id",
    "source",
    "source_sha256",
    "hdu",
    "zoom",
    "x0",
    "y0",
    "ra",
    "dec",
    "tile_sha256",
)
#: Optional descriptive columns, filled with empty values when a tile store lacks them.
OPTIONAL_COLUMNS: dict[str, object] = {
    "mosaic_id": "",
    "pixel_scale": np.nan,
    "coverage": np.nan,
    "instrument": "",
    "detector": "",
    "filter": "",
    "date_obs": "",
    "exptime": np.nan,
    "proposal_id": "",
    "target": "",
    "bunit": "",
}


def software_version() -> str:
    """Version of the installed hubcat distribution."""
    try:
        return _dist_version("hubcat")
    except PackageNotFoundError:  # a source tree that is not installed
        return "0.0.0+unknown"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TileCutout(NamedTuple):
    """Pixels of one catalogue tile and its WCS (see :meth:`Catalogue.tile`)."""

    pixels: np.ndarray
    wcs: Any


class _Inputs(NamedTuple):
    meta: pd.DataFrame
    vectors: np.ndarray
    model: dict
    tiling_digest: str
    tiling: dict
    tile_store_uri: str


# --------------------------------------------------------------------------- inputs


def _gather(tile_store, embedding_store) -> _Inputs:
    """Join the tile store's metadata with the embedding store's accepted vectors."""
    from catalog._inputs import read_embeddings, tiling_digest_of

    meta = tile_store.metadata()
    missing = [c for c in REQUIRED_COLUMNS if c not in meta.columns]
    if missing:
        msg = f"tile store {tile_store.uri} has no column(s) {missing}; re-tile with this hubcat"
        raise IncompatibleCatalogError(msg)
    emb = read_embeddings(embedding_store)
    meta = meta.reset_index(drop=True)
    pos = pd.Series(np.arange(len(emb.tile_ids)), index=pd.Index(emb.tile_ids, dtype=object))
    if pos.index.has_duplicates:
        dup = pos.index[pos.index.duplicated()][0]
        msg = f"embedding store {embedding_store!r} holds tile {dup!r} twice; it is inconsistent"
        raise CorruptCatalogError(msg)
    have = meta["tile_id"].isin(pos.index).to_numpy()
    if not have.all():
        log.info(
            "%d tile(s) of %s have no accepted embedding yet", int((~have).sum()), tile_store.uri
        )
    meta = meta[have].reset_index(drop=True)
    rows = pos.loc[meta["tile_id"].to_numpy()].to_numpy()
    vectors = np.ascontiguousarray(emb.vectors[rows], dtype="<f4")
    meta["volunteers"] = [sorted(str(v) for v in emb.volunteers[i]) for i in rows]
    classes = _unit_classes(embedding_store)
    if classes and "unit_key" in meta.columns:  # the runtime and precision that computed each
        meta["numerical_class"] = meta["unit_key"].map(classes).fillna("").astype(str)
    digest = tiling_digest_of(tile_store)
    meta["tiling_digest"] = digest
    meta["tile_size"] = int(getattr(getattr(tile_store, "config", None), "tile_size", 224))
    meta["tile_store"] = str(tile_store.uri)
    config = getattr(tile_store, "config", None)
    tiling = {digest: config.to_dict() if hasattr(config, "to_dict") else {}}
    return _Inputs(meta, vectors, emb.model, digest, tiling, str(tile_store.uri))


def _unit_classes(embedding_store) -> dict[str, str]:
    """Numerical class of each unit of ``embedding_store`` (units without one left out)."""
    records = getattr(embedding_store, "records", None)
    if records is None:
        return {}
    out = {}
    for rec in records():
        cls = getattr(rec, "numerical_class", "")
        if cls:
            out[rec.unit_key] = str(cls)
    return out


def _check_vectors(vectors: np.ndarray, where: str) -> None:
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        msg = f"{where}: vectors must be a 2-D array [N, D]; got shape {vectors.shape}"
        raise CatalogError(msg)
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        msg = (
            f"{where}: {int((~finite).sum())} vector(s) hold NaN or infinity; re-embed those tiles"
        )
        raise CatalogError(msg)
    errors = norm_error(vectors)
    bad = errors > NORM_TOLERANCE
    if bad.any():
        msg = (
            f"{where}: {int(bad.sum())} vector(s) are not unit-norm (e.g. norm off by {errors[bad][0]:.4g}); "
            "catalogues hold pooled, L2-normalised embeddings"
        )
        raise CatalogError(msg)


def _complete_columns(meta: pd.DataFrame) -> pd.DataFrame:
    meta = meta.copy()
    for name, default in OPTIONAL_COLUMNS.items():
        if name not in meta.columns:
            meta[name] = default
    for name in ("instrument", "detector", "filter", "date_obs", "proposal_id", "target", "bunit"):
        meta[name] = meta[name].astype("string").fillna("").astype(str)
    meta["mosaic_id"] = meta["mosaic_id"].astype(str)
    meta["zoom"] = meta["zoom"].astype(np.int64)
    meta["hdu"] = meta["hdu"].astype(str) if meta["hdu"].dtype == object else meta["hdu"]
    return meta


# --------------------------------------------------------------------------- the catalogue


class Catalogue:
    """A similarity-searchable catalogue of tiles.

    Open one with :meth:`open`, build or extend one with :meth:`build`, combine partial ones with
    :meth:`merge`. Searches are exact inner products on L2-normalised vectors (cosine similarity)
    below :attr:`CatalogConfig.exact_max` vectors and approximate above it (the manifest records
    which).

    Attributes
    ----------
    store : hubcat.storage.ObjectStore
        The catalogue's root.
    manifest : dict
        The opened version's manifest.
    config : CatalogConfig
        Index and query configuration recorded in the manifest.
    """

    def __init__(
        self,
        store: ObjectStore,
        manifest: dict,
        *,
        tile_store: object | None = None,
        _load_index: bool = True,
    ) -> None:
        self.store = store
        self.manifest = manifest
        self.config = CatalogConfig.from_dict(manifest["config"])
        self._tile_store_override = tile_store
        self._tile_stores: dict[str, object] = {}
        self._meta: pd.DataFrame | None = None
        self._vectors: np.ndarray | None = None
        self._unit: np.ndarray | None = None
        self._coords: SkyCoord | None = None
        self._row_of: pd.Series | None = None
        self._superseded: np.ndarray | None = None
        self._model = None
        self._anomaly_cache: dict[int, np.ndarray] = {}
        self._index = self._read_index() if _load_index else None

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        uri: str | Path | ObjectStore,
        *,
        version: int | None = None,
        tile_store: object | None = None,
    ) -> Catalogue:
        """Open the catalogue at ``uri``.

        Parameters
        ----------
        uri : str, path or ObjectStore
            Local folder, ``file://`` URI or ``s3://bucket/prefix``.
        version : int, optional
            An earlier version to open (default: the latest).
        tile_store : tiling.TileStore, optional
            Where to read tile pixels from, if not at the URI recorded in the manifest.

        Raises
        ------
        CatalogNotFoundError
            No catalogue at ``uri`` or no such version.
        IncompatibleCatalogError
            Written in a format this release cannot read.
        CorruptCatalogError
            Index missing or its bytes differ from the manifest (rebuild it with
            ``hubcat build --rebuild-index``).
        """
        store = uri if isinstance(uri, ObjectStore) else open_object_store(uri)
        manifest = _read_manifest(store, version)
        return cls(store, manifest, tile_store=tile_store)

    def __repr__(self) -> str:
        return (
            f"Catalogue({self.uri!r}, version={self.version}, tiles={self.manifest['counts']['tiles']}, "
            f"index={self.manifest['index']['type']}, model={self.manifest['model']['name']!r})"
        )

    @property
    def uri(self) -> str:
        """URI of the catalogue's root."""
        return self.store.uri

    @property
    def version(self) -> int:
        """Version number of the opened catalogue (1 for the first build)."""
        return int(self.manifest["version"])

    @property
    def versions(self) -> list[dict]:
        """Summary of every version up to the opened one (rows, date, Merkle root)."""
        return list(self.manifest["versions"])

    def __len__(self) -> int:
        return int(self.manifest["counts"]["tiles"])

    # ------------------------------------------------------------------ data access

    def _read_checked(self, key: str, sha256: str, what: str) -> bytes:
        try:
            data = self.store.get(key)
        except StoreNotFoundError:
            msg = f"the {what} of catalogue {self.uri} is missing ({key}); " + (
                "rebuild it from the stored vectors with `hubcat build --rebuild-index "
                f"--out {self.uri}`"
                if what == "index"
                else "the catalogue is incomplete: rebuild it with `hubcat build`"
            )
            raise CorruptCatalogError(msg) from None
        if _sha256(data) != sha256:
            msg = (
                f"the {what} of catalogue {self.uri} ({key}) does not match the sha256 in its "
                "manifest: it is corrupt or was changed. "
                + (
                    f"Rebuild it with `hubcat build --rebuild-index --out {self.uri}`"
                    if what == "index"
                    else "Rebuild the catalogue with `hubcat build`"
                )
            )
            raise CorruptCatalogError(msg)
        return data

    def _read_index(self):
        entry = self.manifest["index"]
        data = self._read_checked(entry["key"], entry["sha256"], "index")
        index = _index.deserialize_index(data, where=f"index {entry['key']} of {self.uri}")
        if index.ntotal != len(self):
            msg = f"index of {self.uri} holds {index.ntotal} vectors, the manifest {len(self)}"
            raise CorruptCatalogError(msg)
        return index

    def metadata(self) -> pd.DataFrame:
        """Every tile's row, in catalogue (leaf) order.

        Returns
        -------
        pandas.DataFrame
            The tile store's columns (``tile_id``, ``ra``, ``dec`` in degrees ICRS, ``zoom``,
            ``instrument``, ``filter``, ``date_obs``, ``proposal_id``, ``source``, ...) plus
            ``leaf_index`` (the row's Merkle leaf), ``embedding_sha256``, ``volunteers`` and
            ``catalogue_version`` (the version that added the row). A copy: changing it does not
            change the catalogue.
        """
        return self._metadata().copy()

    def _metadata(self) -> pd.DataFrame:
        if self._meta is None:
            parts = []
            for seg in self.manifest["segments"]:
                data = self._read_checked(seg["metadata_key"], seg["metadata_sha256"], "metadata")
                parts.append(pd.read_parquet(io.BytesIO(data)))
            meta = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
            if len(meta) != len(self):
                msg = f"metadata of {self.uri} has {len(meta)} rows, the manifest {len(self)}"
                raise CorruptCatalogError(msg)
            meta["volunteers"] = [list(v) for v in meta["volunteers"]]
            self._meta = meta
        return self._meta

    def vectors(self) -> np.ndarray:
        """The stored vectors, float32 [N, D], in leaf order (read-only view)."""
        if self._vectors is None:
            d = int(self.manifest["model"]["dim"])
            parts = []
            for seg in self.manifest["segments"]:
                data = self._read_checked(seg["vectors_key"], seg["vectors_sha256"], "vectors")
                parts.append(np.frombuffer(data, dtype="<f4").reshape(-1, d))
            vec = np.concatenate(parts) if parts else np.zeros((0, d), "<f4")
            vec.setflags(write=False)
            self._vectors = vec
        return self._vectors

    def _unit_vectors(self) -> np.ndarray:
        if self._unit is None:
            self._unit = _index.normalise(self.vectors(), what=f"vectors of {self.uri}")
        return self._unit

    def records(self) -> list[dict]:
        """One provenance record per tile, in leaf order (the keys of :data:`RECORD_KEYS`)."""
        return list(self.iter_records())

    def iter_records(self) -> Iterator[dict]:
        """Iterate over :meth:`records` without building the whole list."""
        meta = self._metadata()
        model = self.manifest["model"]
        d = int(model["dim"])
        for row in meta.itertuples(index=False):
            size = int(row.tile_size) * int(row.zoom)
            yield {
                "tile_id": str(row.tile_id),
                "source": str(row.source),
                "source_sha256": str(row.source_sha256),
                "hdu": row.hdu if isinstance(row.hdu, str) else int(row.hdu),
                "zoom": int(row.zoom),
                "box": [int(row.x0), int(row.y0), size, size],
                "tiling_digest": str(row.tiling_digest),
                "tile_sha256": str(row.tile_sha256),
                "model": str(model["name"]),
                "weights_sha256": str(model["weights_sha256"]),
                "preprocessing_digest": str(model["digest"]),
                "embedding_sha256": str(row.embedding_sha256),
                "embedding_dtype": "<f4",
                "embedding_shape": [d],
                "volunteers": sorted(str(v) for v in row.volunteers),
                "software_version": str(row.software_version),
                **supersedes_of(row),
                **class_of(row),
            }

    def row_of(self, tile_id: str) -> int:
        """Row (leaf index) of ``tile_id``.

        Raises
        ------
        UnknownTileError
            If the catalogue has no such tile.
        """
        if self._row_of is None:
            meta = self._metadata()
            rows = pd.Series(np.arange(len(meta)), index=meta["tile_id"].to_numpy())
            self._row_of = rows[~rows.index.duplicated(keep="last")]  # a superseded row's heir
        try:
            return int(self._row_of.loc[tile_id])
        except (KeyError, TypeError):
            msg = (
                f"tile_id {tile_id!r} is not in the catalogue at {self.uri} ({len(self)} tiles); "
                "list the ids with `cat.metadata()['tile_id']` (or `hubcat query CATALOGUE --list`), "
                "or find tiles by position with `cat.cone(coord, radius)`"
            )
            raise UnknownTileError(msg) from None

    def _centres(self) -> SkyCoord:
        if self._coords is None:
            self._coords = centres(self._metadata())
        return self._coords

    # ------------------------------------------------------------------ tile store

    @property
    def tile_store(self):
        """The :class:`tiling.TileStore` the catalogue was built from (the first, if merged)."""
        if self._tile_store_override is not None:
            return self._tile_store_override
        return self._open_tile_store(self.manifest["tile_stores"][0])

    def _open_tile_store(self, uri: str):
        override = self._tile_store_override
        if override is not None and (
            len(self.manifest["tile_stores"]) == 1 or str(getattr(override, "uri", "")) == uri
        ):
            return override
        if uri not in self._tile_stores:
            from tiling import TileStore

            try:
                self._tile_stores[uri] = TileStore.open(uri)
            except FileNotFoundError:
                msg = (
                    f"the tile store {uri} this catalogue was built from is not reachable; "
                    "open the catalogue with Catalogue.open(uri, tile_store=TileStore.open(...))"
                )
                raise CatalogNotFoundError(msg) from None
        return self._tile_stores[uri]

    def tile(self, tile_id: str) -> TileCutout:
        """Pixels and WCS of one tile.

        Returns
        -------
        TileCutout
            ``pixels``: float32 (224, 224), stretched to [0, 1] as embedded; ``wcs``: the tile's
            own astropy WCS (at its zoom).

        Raises
        ------
        UnknownTileError
            If the catalogue has no such tile.
        """
        row = self.row_of(tile_id)
        uri = str(self._metadata()["tile_store"].iloc[row])
        ts = self._open_tile_store(uri)
        return TileCutout(np.asarray(ts.read(tile_id)), ts.tile_wcs(tile_id))

    def verify(self, tile_id: str, public_key: object | None = None) -> Any:
        """Check one tile's provenance: re-hash its pixels and vector, prove its inclusion in the
        signed Merkle root (see :func:`catalog.provenance.verify_tile`)."""
        from catalog.provenance import verify_tile

        return verify_tile(self, tile_id, public_key=public_key)

    # ------------------------------------------------------------------ searching

    def superseded(self) -> np.ndarray:
        """Which rows a later version replaced, bool [N] (see ``docs/provenance.md``).

        A unit reopened after its volunteer was caught, and recomputed, comes back in the next
        version as new rows whose ``supersedes`` column (and Merkle leaf) names the row each one
        replaces; the old rows stay in the append-only log but no query returns them.
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

    def _search(
        self, query: np.ndarray, k: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest rows of one unit-norm query vector, optionally restricted to ``mask``."""
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
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
            own = float(np.dot(self._unit_vectors()[self_row], vector))
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
            return self._unit_vectors()[row], row, f"tile {query}", {}
        if isinstance(query, SkyCoord):
            row, message = self.nearest_tile(query, zoom=zoom)
            if row is None:
                warnings.warn(message, CatalogWarning, stacklevel=3)
                return None, None, f"position {_fmt_coord(query)}", {"message": message}
            tid = str(self._metadata()["tile_id"].iloc[row])
            return self._unit_vectors()[row], row, f"tile {tid} at {_fmt_coord(query)}", {}
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

        Returns ``(None, message)`` when ``coord`` falls outside every tile at that zoom (its
        distance to the nearest centre exceeds that tile's half-diagonal).
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
        meta = self._metadata()
        sep = self._centres().separation(coord)
        inside = (sep <= radius).astype(bool)
        mask = self._row_mask(filters)
        if mask is not None:
            inside &= mask
        rows = np.flatnonzero(inside)
        rows = rows[np.argsort(sep[rows].to_value(u.arcsec), kind="stable")]
        table = result_table(meta, rows, sep[rows].to(u.arcsec).value, "separation", unit=u.arcsec)
        table.meta.update(
            {"query": f"cone {_fmt_coord(coord)} r={radius.to(u.arcsec):.2f}", **self._table_info()}
        )
        if not len(rows):
            table.meta["message"] = (
                f"no tile centre of {self.uri} lies within {radius.to(u.arcsec):.1f} of "
                f"{_fmt_coord(coord)}"
                + (f" with filters {info_filters(filters)}" if filters else "")
            )
        return table

    def anomalies(self, n: int = 10, *, k: int | None = None, **filters: object) -> Table:
        """The ``n`` tiles least like any other: ranked by distance to their k-th neighbour.

        The score of a tile is ``1 - s_k``, where ``s_k`` is the cosine similarity to its k-th
        nearest other tile in the catalogue (``k`` defaults to ``config.anomaly_k``, 5): a tile
        with fewer than k close look-alikes scores high. It is robust to a tile having one
        near-duplicate (overlapping tiles, a zoom level) that a first-neighbour distance would
        not be. Scores use the catalogue's index and are cached per ``k``.

        Returns
        -------
        astropy.table.Table
            Columns of :meth:`similar` with ``anomaly`` (0..2) instead of ``similarity``,
            highest first.
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
        """Anomaly score of every row (see :meth:`anomalies`), float64 [N]."""
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

    # ------------------------------------------------------------------ display, export

    def show(self, results: Table, *, ncols: int = 5, max_tiles: int = 20, figsize=None):
        """Draw the tiles of ``results`` in a labelled grid (the query first); return the Figure.

        See :func:`catalog._plot.show_results`.
        """
        from catalog._plot import show_results

        return show_results(self, results, ncols=ncols, max_tiles=max_tiles, figsize=figsize)

    def map(
        self,
        color_by: str = "instrument",
        *,
        method: str | None = None,
        ax=None,
        sample: int = 50_000,
    ):
        """2-D map of the embedding space, coloured by a metadata column.

        See :func:`catalog._plot.embedding_map`.
        """
        from catalog._plot import embedding_map

        return embedding_map(self, color_by=color_by, method=method, ax=ax, sample=sample)

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        out_uri: str | Path | ObjectStore,
        tile_store,
        embedding_store,
        signing_key: object | None = None,
        *,
        config: CatalogConfig | None = None,
    ) -> Catalogue:
        """Build a catalogue at ``out_uri``, or add a new version to the one already there.

        Parameters
        ----------
        out_uri : str, path or ObjectStore
            Catalogue root (local folder or ``s3://`` prefix).
        tile_store : tiling.TileStore
            Tiles and their metadata.
        embedding_store : embeddings.EmbeddingStore
            Accepted vectors of those tiles (tiles without one are left out, and counted).
        signing_key : optional
            Operator's Ed25519 key that signs the provenance checkpoint (see
            :func:`catalog.provenance.build_provenance`).
        config : CatalogConfig, optional
            Index configuration of a new catalogue (an existing one keeps its own).

        Returns
        -------
        Catalogue
            The new (or unchanged, when no tile is new) latest version.

        Raises
        ------
        IncompatibleCatalogError
            If the existing catalogue holds another model's embeddings.
        """
        store = out_uri if isinstance(out_uri, ObjectStore) else open_object_store(out_uri)
        inputs = _gather(tile_store, embedding_store)
        previous = None
        if store.exists("manifest.json"):
            previous = cls(store, _read_manifest(store, None), _load_index=False)
            _check_compatible(
                previous.manifest, inputs.model, f"tile store {inputs.tile_store_uri}"
            )
            meta_prev = previous._metadata()
            new = ~inputs.meta["tile_id"].isin(meta_prev["tile_id"]).to_numpy()
            heirs = recomputed_rows(previous, inputs.meta, inputs.vectors)
            changed = heirs >= 0
            if not (new | changed).any():
                log.info(
                    "catalogue %s already holds every tile of %s", store.uri, inputs.tile_store_uri
                )
                return cls(store, previous.manifest, tile_store=tile_store)
            take = new | changed
            meta, vectors = inputs.meta[take].reset_index(drop=True), inputs.vectors[take]
            if changed.any():
                meta["supersedes"] = heirs[take]
                log.info("%d recomputed tile(s) supersede their earlier rows", int(changed.sum()))
        else:
            meta, vectors = inputs.meta, inputs.vectors
        return _write_version(
            store,
            meta,
            vectors,
            inputs.model,
            previous,
            config or CatalogConfig(),
            signing_key,
            tile_store=tile_store,
            tiling=inputs.tiling,
            note=f"added {len(meta)} tile(s) from {inputs.tile_store_uri}"
            + (
                f" ({int((meta['supersedes'] >= 0).sum())} superseding recomputed rows)"
                if "supersedes" in meta.columns
                else ""
            ),
        )

    @classmethod
    def merge(
        cls,
        out_uri: str | Path | ObjectStore,
        catalogues: Sequence[Catalogue | str | Path],
        signing_key: object | None = None,
        *,
        config: CatalogConfig | None = None,
    ) -> Catalogue:
        """Merge catalogues built from disjoint sets of mosaics into a new one at ``out_uri``.

        Rows keep the order of ``catalogues`` (all rows of the first, then of the second, ...);
        a tile present in several inputs with the same embedding is kept once; the same
        ``tile_id`` with different embeddings is an error.

        Raises
        ------
        IncompatibleCatalogError
            Inputs embedded with different models / preprocessing, or conflicting duplicates.
        CatalogError
            ``out_uri`` already holds a catalogue (merge into a new location).
        """
        cats = [c if isinstance(c, Catalogue) else Catalogue.open(c) for c in catalogues]
        if not cats:
            msg = "merge needs at least one catalogue"
            raise CatalogError(msg)
        store = out_uri if isinstance(out_uri, ObjectStore) else open_object_store(out_uri)
        if store.exists("manifest.json"):
            msg = f"{store.uri} already holds a catalogue; merge into a new location"
            raise CatalogError(msg)
        model = cats[0].manifest["model"]
        for c in cats[1:]:
            _check_compatible(cats[0].manifest, c.manifest["model"], f"catalogue {c.uri}")
        metas, vecs, seen = [], [], {}
        for c in cats:
            meta = c.metadata()
            vec = c.vectors()
            keep = np.ones(len(meta), dtype=bool)
            for i, (tid, esha) in enumerate(
                zip(meta["tile_id"], meta["embedding_sha256"], strict=True)
            ):
                if tid in seen:
                    if seen[tid] != esha:
                        msg = (
                            f"tile {tid!r} is in several catalogues with different embeddings "
                            f"(one is {c.uri}); they were not built from disjoint mosaics"
                        )
                        raise IncompatibleCatalogError(msg)
                    keep[i] = False
                else:
                    seen[tid] = esha
            metas.append(meta[keep])
            vecs.append(vec[keep])
        meta = pd.concat(metas, ignore_index=True)
        vectors = np.concatenate(vecs)
        return _write_version(
            store,
            meta,
            vectors,
            model,
            None,
            config or cats[0].config,
            signing_key,
            tiling={d: t for c in cats for d, t in (c.manifest.get("tiling") or {}).items()},
            note="merged " + ", ".join(c.uri for c in cats),
            keep_columns=True,
        )

    @classmethod
    def rebuild_index(
        cls, uri: str | Path | ObjectStore, *, version: int | None = None
    ) -> Catalogue:
        """Rebuild a missing or corrupt index from the stored (sha256-checked) vectors.

        The manifest of that version is rewritten with the new index's sha256; rows, vectors and
        provenance are unchanged.
        """
        store = uri if isinstance(uri, ObjectStore) else open_object_store(uri)
        manifest = _read_manifest(store, version)
        cat = cls(store, manifest, _load_index=False)
        kind = manifest["index"]["type"]
        index = _index.build_index(cat._unit_vectors(), cat.config, kind)
        manifest = dict(manifest)
        manifest["index"] = _write_index(store, index, cat.config, cat.version)
        manifest["index"]["rebuilt"] = _now()
        store.put(_version_key(cat.version), _dumps(manifest))
        latest = _read_manifest(store, None)
        if int(latest["version"]) == cat.version:
            store.put("manifest.json", _dumps(manifest))
        return cls(store, manifest)


# --------------------------------------------------------------------------- writing


def _version_key(version: int) -> str:
    return f"versions/{version:06d}/manifest.json"


def _dumps(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def _read_manifest(store: ObjectStore, version: int | None) -> dict:
    key = "manifest.json" if version is None else _version_key(int(version))
    try:
        data = store.get(key)
    except StoreNotFoundError:
        if version is not None and store.exists("manifest.json"):
            latest = json.loads(store.get("manifest.json"))
            msg = (
                f"catalogue {store.uri} has no version {version}; its versions are "
                f"{[v['version'] for v in latest.get('versions', [])]}"
            )
        else:
            msg = (
                f"no catalogue at {store.uri} (no manifest.json); build one with "
                f"`hubcat build --store TILE_STORE --out {store.uri}`"
            )
        raise CatalogNotFoundError(msg) from None
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        msg = f"{store.uri}/{key} is not valid JSON: the catalogue manifest is corrupt"
        raise CorruptCatalogError(msg) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        msg = f"{store.uri}/{key} is not a hubcat catalogue manifest (format {manifest.get('format') if isinstance(manifest, dict) else None!r})"
        raise IncompatibleCatalogError(msg)
    fv = manifest.get("format_version")
    if fv != FORMAT_VERSION:
        msg = (
            f"catalogue {store.uri} has format version {fv!r} (written by hubcat "
            f"{manifest.get('software_version', '?')}); this hubcat {software_version()} reads format "
            f"version {FORMAT_VERSION}. Open it with a matching hubcat, or rebuild it from the tile "
            "store with `hubcat build`"
        )
        raise IncompatibleCatalogError(msg)
    return manifest


def _check_compatible(manifest: dict, model: dict, what: str) -> None:
    have = manifest["model"]
    for key in ("digest", "weights_sha256", "dim"):
        if have.get(key) != model.get(key):
            msg = (
                f"{what} was embedded with model {model.get('name')!r} ({key} {model.get(key)}), "
                f"but catalogue {manifest.get('uri', '')} holds {have.get('name')!r} ({key} "
                f"{have.get(key)}); build a separate catalogue for each model"
            )
            raise IncompatibleCatalogError(msg)


def _write_index(store: ObjectStore, index, config: CatalogConfig, version: int) -> dict:
    data = _index.serialize_index(index)
    key = f"versions/{version:06d}/index.faiss"
    store.put(key, data)
    entry = _index.describe_index(index, config)
    entry.update({"key": key, "sha256": _sha256(data), "bytes": len(data)})
    return entry


def _write_version(
    store: ObjectStore,
    meta: pd.DataFrame,
    vectors: np.ndarray,
    model: dict,
    previous: Catalogue | None,
    config: CatalogConfig,
    signing_key: object | None,
    *,
    tile_store: object | None = None,
    tiling: dict | None = None,
    note: str = "",
    keep_columns: bool = False,
) -> Catalogue:
    """Append ``meta``/``vectors`` as a new version of ``store`` (the first when no previous)."""
    from catalog.provenance import build_provenance

    where = f"catalogue {store.uri}"
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    _check_vectors(vectors, where)
    if vectors.shape[0] != len(meta):
        msg = f"{where}: {len(meta)} metadata rows but {vectors.shape[0]} vectors"
        raise CatalogError(msg)
    if vectors.shape[1] != int(model["dim"]):
        msg = f"{where}: vectors have dimension {vectors.shape[1]}, the model {model['dim']}"
        raise CatalogError(msg)
    if meta["tile_id"].duplicated().any():
        dup = meta["tile_id"][meta["tile_id"].duplicated()].iloc[0]
        msg = f"{where}: tile_id {dup!r} appears twice in the input; the tile store is inconsistent"
        raise CatalogError(msg)
    if previous is not None:
        config = previous.config
    version = 1 if previous is None else previous.version + 1
    start = 0 if previous is None else len(previous)
    created = _now()

    meta = _complete_columns(meta.reset_index(drop=True))
    meta["embedding_sha256"] = [hashlib.sha256(v.tobytes()).hexdigest() for v in vectors]
    if not keep_columns or "software_version" not in meta.columns:
        meta["software_version"] = software_version()
    if not keep_columns or "catalogue_version" not in meta.columns:
        meta["catalogue_version"] = version
    meta["leaf_index"] = np.arange(start, start + len(meta), dtype=np.int64)
    if previous is not None:
        prev_cols = list(previous._metadata().columns)
        for c in prev_cols:
            if c not in meta.columns:
                meta[c] = OPTIONAL_COLUMNS.get(c, "")
        meta = meta[prev_cols + [c for c in meta.columns if c not in prev_cols]]

    seg_key = f"segments/{version:06d}"
    buf = io.BytesIO()
    meta.to_parquet(buf, index=False)
    meta_bytes = buf.getvalue()
    vec_bytes = vectors.tobytes()
    store.put(f"{seg_key}/vectors.f32", vec_bytes)
    store.put(f"{seg_key}/metadata.parquet", meta_bytes)
    segment = {
        "version": version,
        "rows": len(meta),
        "first_row": start,
        "metadata_key": f"{seg_key}/metadata.parquet",
        "metadata_sha256": _sha256(meta_bytes),
        "vectors_key": f"{seg_key}/vectors.f32",
        "vectors_sha256": _sha256(vec_bytes),
    }
    segments = ([] if previous is None else list(previous.manifest["segments"])) + [segment]

    # the full catalogue of this version, for the index and the provenance
    manifest: dict = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "software_version": software_version(),
        "version": version,
        "created": created,
        "model": dict(model),
        "weights_sha256": model["weights_sha256"],
        "preprocessing_digest": model["digest"],
        "config": config.to_dict(),
        "config_digest": config.digest,
        "segments": segments,
        "counts": {"tiles": start + len(meta)},
        "index": {},
    }
    cat = Catalogue(store, manifest, tile_store=tile_store, _load_index=False)
    full = cat._metadata()
    manifest["tiling_digests"] = sorted(full["tiling_digest"].astype(str).unique())
    manifest["tiling_digest"] = (
        manifest["tiling_digests"][0] if len(manifest["tiling_digests"]) == 1 else None
    )
    known = {} if previous is None else dict(previous.manifest.get("tiling") or {})
    known.update(tiling or {})
    manifest["tiling"] = {d: known.get(d, {}) for d in manifest["tiling_digests"]}
    manifest["tile_stores"] = list(dict.fromkeys(full["tile_store"].astype(str)))
    manifest["tile_store"] = manifest["tile_stores"][0]
    manifest["counts"] = {
        "tiles": len(full),
        "mosaics": int(full["mosaic_id"].nunique()),
        "sources": int(full["source_sha256"].nunique()),
        "zooms": {str(z): int(n) for z, n in full["zoom"].value_counts().sort_index().items()},
        "dim": int(model["dim"]),
    }

    # the index: extend the previous one when it has the right kind, else build afresh
    kind = config.index_kind(len(full))
    if previous is not None and previous.manifest["index"]["type"] == kind:
        index = previous._read_index()
        index.add(_index.normalise(vectors, what=where))
        how = "extended"
    else:
        index = _index.build_index(cat._unit_vectors(), config, kind)
        how = "built"
    manifest["index"] = _write_index(store, index, config, version)
    manifest["index"]["how"] = how

    previous_prov = None if previous is None else previous.manifest.get("provenance")
    manifest["provenance"] = build_provenance(
        cat.records(), store, signing_key=signing_key, previous=previous_prov
    )
    root = manifest["provenance"].get("root") if isinstance(manifest["provenance"], dict) else None
    history = [] if previous is None else list(previous.manifest["versions"])
    history.append(
        {
            "version": version,
            "created": created,
            "tiles": len(full),
            "added": len(meta),
            "index": kind,
            "merkle_root": root,
            "note": note,
            "manifest": _version_key(version),
        }
    )
    manifest["versions"] = history
    store.put(_version_key(version), _dumps(manifest))
    store.put("manifest.json", _dumps(manifest))
    log.info("catalogue %s version %d: %d tiles (%s)", store.uri, version, len(full), note)
    return Catalogue(store, manifest, tile_store=tile_store)


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
