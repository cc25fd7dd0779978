"""Reading what a catalogue is built from: the tile store's digest and the embedding store."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from catalog.errors import IncompatibleCatalogError

__all__ = ["Embeddings", "read_embeddings", "tiling_digest_of"]


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
