"""Reading what a catalogue is built from: the tile store's digest and the embedding store."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from catalog.errors import CatalogError, CorruptCatalogError, IncompatibleCatalogError
from embeddings import NORM_TOLERANCE, norm_error

__all__ = [
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "Embeddings",
    "Inputs",
    "check_vectors",
    "complete_columns",
    "gather",
    "read_embeddings",
    "tiling_digest_of",
    "unit_classes",
]

log = logging.getLogger(__name__)


class Embeddings(NamedTuple):
    """Accepted vectors of an embedding store, and the model that made them."""

    tile_ids: list[str]
    vectors: np.ndarray
    volunteers: list[tuple[str, ...]]
    model: dict[str, Any]


def _model_description(embedding_store) -> dict[str, Any]:
    info = embedding_store.model_info() if hasattr(embedding_store, "model_info") else None
    digest = embedding_store.model_digest
    if info is None:
        # a store created from a bare digest: accept it only if it is the default model's
        from embeddings import describe, load_model

        model = load_model()
        if model.digest != digest:
            msg = (
                f"embedding store {embedding_store.uri} has no model.json and its digest {digest} "
                "is not the default model's; create the store with EmbeddingStore(uri, model) so "
                "the catalogue can record which model made the vectors"
            )
            raise IncompatibleCatalogError(msg)
        info = describe(model)
    if info.get("digest") != digest:
        msg = (
            f"embedding store {embedding_store.uri}: model.json describes digest {info.get('digest')}, "
            f"the store holds {digest}; the store is inconsistent"
        )
        raise IncompatibleCatalogError(msg)
    return {
        "name": info["name"],
        "digest": info["digest"],
        "weights_sha256": info["weights_sha256"],
        "dim": int(info["dim"]),
        "spec": info.get("spec", {}),
        "config": info.get("config", {}),
        "record": info.get("record", {}),
    }


def read_embeddings(embedding_store) -> Embeddings:
    """Every accepted vector of ``embedding_store`` with the description of its model."""
    tile_ids, vectors, volunteers = embedding_store.read_all()
    model = _model_description(embedding_store)
    if len(tile_ids) and vectors.shape[1] != model["dim"]:
        msg = (
            f"embedding store {embedding_store.uri} holds {vectors.shape[1]}-d vectors but its model "
            f"{model['name']} makes {model['dim']}-d ones"
        )
        raise IncompatibleCatalogError(msg)
    if not len(tile_ids):
        vectors = np.zeros((0, model["dim"]), dtype=np.float32)
    return Embeddings(list(tile_ids), vectors, list(volunteers), model)


def tiling_digest_of(tile_store) -> str:
    """Digest of the tiling parameters of ``tile_store`` (its ``TilingConfig``)."""
    for attr in ("tiling_digest", "digest"):
        value = getattr(tile_store, attr, None)
        if isinstance(value, str):
            return value
    config = getattr(tile_store, "config", None)
    digest = getattr(config, "digest", None)
    if callable(digest):
        digest = digest()
    if not isinstance(digest, str):
        msg = f"tile store {getattr(tile_store, 'uri', tile_store)!r} does not expose its tiling digest"
        raise IncompatibleCatalogError(msg)
    return digest


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


class Inputs(NamedTuple):
    """What a new version is built from: rows, their vectors, the model and the tiling."""

    meta: pd.DataFrame
    vectors: np.ndarray
    model: dict
    tiling_digest: str
    tiling: dict
    tile_store_uri: str


# --------------------------------------------------------------------------- inputs


def gather(tile_store, embedding_store) -> Inputs:
    """Join the tile store's metadata with the embedding store's accepted vectors."""
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
    classes = unit_classes(embedding_store)
    if classes and "unit_key" in meta.columns:  # the runtime and precision that computed each
        meta["numerical_class"] = meta["unit_key"].map(classes).fillna("").astype(str)
    digest = tiling_digest_of(tile_store)
    meta["tiling_digest"] = digest
    meta["tile_size"] = int(getattr(getattr(tile_store, "config", None), "tile_size", 224))
    meta["tile_store"] = str(tile_store.uri)
    config = getattr(tile_store, "config", None)
    tiling = {digest: config.to_dict() if hasattr(config, "to_dict") else {}}
    return Inputs(meta, vectors, emb.model, digest, tiling, str(tile_store.uri))


def unit_classes(embedding_store) -> dict[str, str]:
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


def check_vectors(vectors: np.ndarray, where: str) -> None:
    """Raise :class:`CatalogError` unless ``vectors`` are finite, unit-norm rows [N, D]."""
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


def complete_columns(meta: pd.DataFrame) -> pd.DataFrame:
    """``meta`` with every optional column present and the string columns as ``str``."""
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
