"""The catalogue: a FAISS index, a parquet metadata table and a manifest, in one object store.

Layout under the catalogue's root (a local folder or an ``s3://`` prefix)::

    manifest.json                     the current version's manifest (written last, atomically)
    versions/000001/manifest.json     every version's manifest, never rewritten except to
    versions/000001/index.faiss       repair its index (``rebuild_index``); one index per version
    segments/000001/metadata/00000.parquet  the rows a version added (append-only), sorted by
                                      HEALPix index in bounded shards (catalog._metashards);
                                      older catalogues: one segments/000001/metadata.parquet
    segments/000001/vectors.f32       their vectors, float32 little-endian, row-major [n, D]
    provenance/...                    Merkle leaves and checkpoints (:mod:`catalog.provenance`)

A new version appends a segment, so earlier rows keep their row number, which is also their
Merkle leaf index, and every earlier version still opens (``Catalogue.open(uri, version=1)``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord
from astropy.table import Table

from catalog import _index
from catalog._compressed import KIND as COMPRESSED
from catalog._compressed import load_index
from catalog._config import CatalogConfig
from catalog._manifest import FORMAT, FORMAT_VERSION, read_manifest, sha256_hex
from catalog._metashards import read_segment_metadata
from catalog._query import centres
from catalog._searching import SearchMixin
from catalog._shards import segment_shards
from catalog._supersede import class_of, supersedes_of
from catalog._versions import BuildMixin
from catalog.errors import (
    CatalogNotFoundError,
    CorruptCatalogError,
    UnknownTileError,
    missing_part,
)
from catalog.provenance import TileRecord
from hubcat.errors import StoreNotFoundError
from hubcat.storage import ObjectStore, open_object_store

__all__ = ["FORMAT", "FORMAT_VERSION", "Catalogue", "TileCutout"]

log = logging.getLogger(__name__)


class TileCutout(NamedTuple):
    """Pixels of one catalogue tile and its WCS (see :meth:`Catalogue.tile`)."""

    pixels: np.ndarray
    wcs: Any


class Catalogue(SearchMixin, BuildMixin):
    """A similarity-searchable catalogue of tiles.

    Open one with :meth:`open`, build or extend one with :meth:`build`, combine partial ones with
    :meth:`merge`. Searches are exact inner products on L2-normalised vectors (cosine similarity)
    below :attr:`CatalogConfig.exact_max` vectors and approximate above it (the manifest records
    which).

    Parameters
    ----------
    store : hubcat.storage.ObjectStore
        The catalogue's root (:meth:`open` finds it and reads the manifest).
    manifest : dict
        The manifest of the version to use; its ``"config"`` becomes :attr:`config`.
    tile_store : tiling.TileStore, optional
        Where to read tile pixels from, instead of the tile stores the manifest names.
    _load_index : bool
        Read the index now; False only to repair a missing one (:meth:`rebuild_index`).

    Raises
    ------
    CorruptCatalogError
        The index is missing, differs from the manifest's sha256 or holds another row count.

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
        self._superseded_ids: np.ndarray | None = None  # the same rows as leaf indexes (cone)
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

        Returns
        -------
        Catalogue
            That version, its index loaded (metadata and vectors are read on first use).

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
        manifest = read_manifest(store, version)
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
        fix = (
            f"rebuild it from the stored vectors with `hubcat build --rebuild-index --out {self.uri}`"
            if what == "index"
            else "the catalogue is incomplete: rebuild it with `hubcat build`"
        )
        try:
            data = self.store.get(key)
        except StoreNotFoundError:
            raise missing_part(f"the {what} ({key})", f"catalogue {self.uri}", fix) from None
        if sha256_hex(data) != sha256:
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
        if entry["type"] == COMPRESSED:
            return load_index(
                self.store,
                entry,
                self.manifest["segments"],
                int(self.manifest["model"]["dim"]),
                where=f"catalogue {self.uri}",
            )
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
                parts.append(read_segment_metadata(seg, self._read_checked))
            meta = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
            if len(meta) != len(self):
                msg = f"metadata of {self.uri} has {len(meta)} rows, the manifest {len(self)}"
                raise CorruptCatalogError(msg)
            meta["volunteers"] = [list(v) for v in meta["volunteers"]]
            self._meta = meta
        return self._meta

    def vectors(self) -> np.ndarray:
        """The stored vectors, in leaf order (read-only view).

        Returns
        -------
        numpy.ndarray
            float32 [N, D], row ``i`` the embedding of :meth:`metadata` row ``i``.

        Raises
        ------
        CorruptCatalogError
            A vector shard is missing or differs from the manifest's sha256.
        """
        if self._vectors is None:
            d = int(self.manifest["model"]["dim"])
            parts = []
            for seg in self.manifest["segments"]:
                for shard in segment_shards(seg):
                    data = self._read_checked(shard["key"], shard["sha256"], "vectors")
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
        """One provenance record per tile, in leaf order.

        Returns
        -------
        list of dict
            N :class:`TileRecord` dicts; record ``i``'s canonical JSON is Merkle leaf ``i``.
        """
        return list(self.iter_records())

    def iter_records(self) -> Iterator[dict]:
        """Iterate over :meth:`records` without building the whole list.

        Yields
        ------
        dict
            One tile's :class:`TileRecord` as a dict, in leaf order.
        """
        meta = self._metadata()
        model = self.manifest["model"]
        d = int(model["dim"])
        for row in meta.itertuples(index=False):
            size = int(row.tile_size) * int(row.zoom)
            yield TileRecord(
                tile_id=str(row.tile_id),
                source=str(row.source),
                source_sha256=str(row.source_sha256),
                hdu=row.hdu if isinstance(row.hdu, str) else int(row.hdu),
                zoom=int(row.zoom),
                box=(int(row.x0), int(row.y0), size, size),
                tiling_digest=str(row.tiling_digest),
                tile_sha256=str(row.tile_sha256),
                model=str(model["name"]),
                weights_sha256=str(model["weights_sha256"]),
                preprocessing_digest=str(model["digest"]),
                embedding_sha256=str(row.embedding_sha256),
                embedding_dtype="<f4",
                embedding_shape=(d,),
                volunteers=tuple(sorted(str(v) for v in row.volunteers)),
                software_version=str(row.software_version),
                **supersedes_of(row),
                **class_of(row),
            ).to_dict()

    def row_of(self, tile_id: str) -> int:
        """Row (leaf index) of ``tile_id``.

        Parameters
        ----------
        tile_id : str

        Returns
        -------
        int
            0-based row in :meth:`metadata` and :meth:`vectors`, also the Merkle leaf index (of
            the superseding row, for a tile recomputed in a later version).

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

        Parameters
        ----------
        tile_id : str

        Returns
        -------
        TileCutout
            ``pixels``: float32 (224, 224), stretched to [0, 1] as embedded; ``wcs``: the tile's
            own astropy WCS (at its zoom).

        Raises
        ------
        UnknownTileError
            If the catalogue has no such tile.
        CatalogNotFoundError
            If its tile store is not reachable (pass ``tile_store=`` to :meth:`open`).
        """
        row = self.row_of(tile_id)
        uri = str(self._metadata()["tile_store"].iloc[row])
        ts = self._open_tile_store(uri)
        return TileCutout(np.asarray(ts.read(tile_id)), ts.tile_wcs(tile_id))

    def verify(self, tile_id: str, public_key: object | None = None) -> Any:
        """Check one tile's provenance: re-hash its pixels and vector, prove its inclusion in the
        signed Merkle root (see :func:`catalog.provenance.verify_tile`).

        Parameters
        ----------
        tile_id : str
        public_key : str, path or catalog.provenance.VerifierKey, optional
            The operator's public key (default: the one the catalogue publishes).

        Returns
        -------
        catalog.provenance.InclusionProof

        Raises
        ------
        VerificationError
            If the tile's pixels, embedding, leaf, the tree or the signature does not verify.
        ProvenanceNotFoundError
            If the provenance files are missing.
        UnknownTileError
            If the catalogue has no such tile.
        """
        from catalog.provenance import verify_tile

        return verify_tile(self, tile_id, public_key=public_key)

    # ------------------------------------------------------------------ display, export

    def show(self, results: Table, *, ncols: int = 5, max_tiles: int = 20, figsize=None):
        """Draw the tiles of ``results`` in a labelled grid (the query first); return the Figure.

        See :func:`catalog._plot.show_results`.

        Parameters
        ----------
        results : astropy.table.Table
            A result of :meth:`similar`, :meth:`cone` or :meth:`anomalies`.
        ncols : int
            Panels per row.
        max_tiles : int
            At most this many rows of ``results`` are drawn.
        figsize : tuple of float, optional
            Figure size in inches (default: 2.6 x 2.9 per panel).

        Returns
        -------
        matplotlib.figure.Figure

        Raises
        ------
        QueryError
            A table without ``tile_id``, or an empty one.
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

        Parameters
        ----------
        color_by : str
            Metadata column: one colour per value (legend), or a colour bar if numeric.
        method : {"umap", "pca"} or None
            Projection; default UMAP (PCA, with a warning, without ``umap-learn``).
        ax : matplotlib.axes.Axes, optional
        sample : int
            At most this many tiles (a subset seeded by ``config.seed``) are projected.

        Returns
        -------
        figure : matplotlib.figure.Figure
        coords : pandas.DataFrame
            ``tile_id``, ``x``, ``y`` and the ``color_by`` column of the projected tiles.

        Raises
        ------
        QueryError
            ``color_by`` is not a metadata column, or ``method`` is unknown or unusable.
        """
        from catalog._plot import embedding_map

        return embedding_map(self, color_by=color_by, method=method, ax=ax, sample=sample)
