"""Making catalogue versions: the build, merge and index-repair class methods of
:class:`catalog.Catalogue` (the work itself is in :mod:`catalog._build`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from catalog._config import CatalogConfig
from hubcat.storage import ObjectStore

if TYPE_CHECKING:
    from catalog._catalogue import Catalogue

__all__ = ["BuildMixin"]


class BuildMixin:
    """The class methods that write a new catalogue version; mixed into :class:`catalog.Catalogue`."""

    @classmethod
    def build(
        cls,
        out_uri: str | Path | ObjectStore,
        tile_store,
        embedding_store,
        signing_key: object | None = None,
        *,
        config: CatalogConfig | None = None,
        client: object | None = None,
        progress: Callable[[int, int], None] | None = None,
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
        client : distributed.Client, optional
            Dask cluster that encodes the compressed index's shards (default: a LocalCluster of
            ``config.build_workers`` processes, started only for the ``ivfpq_rerank`` kind).
        progress : callable, optional
            ``progress(done, total)`` as shards are encoded.

        Returns
        -------
        Catalogue
            The new (or unchanged, when no tile is new) latest version.

        Raises
        ------
        IncompatibleCatalogError
            If the existing catalogue holds another model's embeddings.
        """
        from catalog._build import build_catalogue

        return build_catalogue(
            cls,
            out_uri,
            tile_store,
            embedding_store,
            signing_key,
            config=config,
            client=client,
            progress=progress,
        )

    @classmethod
    def from_vectors(
        cls,
        out_uri: str | Path | ObjectStore,
        metadata: pd.DataFrame,
        vectors: np.ndarray,
        model: dict,
        signing_key: object | None = None,
        *,
        config: CatalogConfig | None = None,
        client: object | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Catalogue:
        """Build (or extend) a catalogue from a metadata table and its unit vectors.

        See :func:`catalog._build.build_from_vectors`.

        Parameters
        ----------
        out_uri : str, path or ObjectStore
        metadata : pandas.DataFrame
            One row per vector with at least :data:`catalog._build.REQUIRED_COLUMNS` and
            ``tiling_digest``.
        vectors : numpy.ndarray
            float32 [N, D], unit-norm, row ``i`` that of ``metadata`` row ``i``.
        model : dict
            The manifest's model entry (``name``, ``weights_sha256``, ``digest``, ``dim``).
        signing_key, config, client, progress
            As for :func:`catalog._build.build_catalogue`.

        Returns
        -------
        Catalogue
            The new latest version.

        Raises
        ------
        IncompatibleCatalogError
            Missing columns, or another model's embeddings than the existing catalogue holds.
        """
        from catalog._build import build_from_vectors

        return build_from_vectors(
            cls,
            out_uri,
            metadata,
            vectors,
            model,
            signing_key,
            config=config,
            client=client,
            progress=progress,
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

        Rows keep the order of ``catalogues``; a tile in several with the same embedding is
        kept once. See :func:`catalog._build.merge_catalogues`.

        Parameters
        ----------
        out_uri : str, path or ObjectStore
            Where to write it; must not hold a catalogue.
        catalogues : sequence of Catalogue, str or path
            The inputs, opened or by URI, all embedded with the same model.
        signing_key : optional
            Operator's Ed25519 key that signs the provenance checkpoint.
        config : CatalogConfig, optional
            Index configuration (default: the first input's).

        Returns
        -------
        Catalogue
            The merged catalogue (version 1).

        Raises
        ------
        IncompatibleCatalogError
            Different models / preprocessing, or one ``tile_id`` with different embeddings.
        CatalogError
            No input, or ``out_uri`` already holds a catalogue.
        """
        from catalog._build import merge_catalogues

        return merge_catalogues(cls, out_uri, catalogues, signing_key, config=config)

    @classmethod
    def rebuild_index(
        cls, uri: str | Path | ObjectStore, *, version: int | None = None
    ) -> Catalogue:
        """Rebuild a missing or corrupt index from the stored (sha256-checked) vectors.

        See :func:`catalog._build.rebuild_index`.

        Parameters
        ----------
        uri : str, path or ObjectStore
        version : int, optional
            The version whose index to rebuild (default: the latest).

        Returns
        -------
        Catalogue
            That version, its manifest rewritten with the new index's sha256.

        Raises
        ------
        CatalogNotFoundError
            No catalogue at ``uri`` or no such version.
        CorruptCatalogError
            The stored vectors are missing or differ from the manifest's sha256.
        """
        from catalog._build import rebuild_index

        return rebuild_index(cls, uri, version=version)
