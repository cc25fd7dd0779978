"""Exceptions raised by :mod:`embeddings`.

All derive from :class:`hubcat.errors.HubcatError` and from the builtin exception they refine.
Messages name the bad value (model, file, tensor, array), what was expected, and what to do.
"""

from __future__ import annotations

from hubcat.errors import HubcatError

__all__ = [
    "CorruptWeightsError",
    "EmbeddingConfigError",
    "EmbeddingError",
    "EmbeddingStoreError",
    "IRCacheError",
    "ModelConversionError",
    "PrecisionUnavailableError",
    "RuntimeUnavailableError",
    "TileInputError",
    "TuneError",
    "UnknownModelError",
    "WeightsError",
    "WeightsMismatchError",
    "WeightsUnavailableError",
]


class EmbeddingError(HubcatError):
    """Base class of the errors of the embedding stage."""


class EmbeddingConfigError(EmbeddingError, ValueError):
    """An :class:`~embeddings.EmbedConfig` value that is not supported."""


class UnknownModelError(EmbeddingError, ValueError):
    """A model name that neither the registry nor timm knows."""


class WeightsError(EmbeddingError, ValueError):
    """Weights that cannot be used for the requested model."""


class WeightsMismatchError(WeightsError):
    """A weights file whose tensors do not match the model (another architecture)."""


class CorruptWeightsError(WeightsError):
    """A weights file that cannot be read, or whose sha256 is not the expected one."""


class WeightsUnavailableError(EmbeddingError, FileNotFoundError):
    """The weights of a model cannot be obtained (no local file, hub unreachable)."""


class TileInputError(EmbeddingError, ValueError):
    """Tiles with the wrong shape, dtype or non-finite values."""


class EmbeddingStoreError(EmbeddingError, ValueError):
    """An embedding store whose content is missing, inconsistent or fails its checksums."""


class RuntimeUnavailableError(EmbeddingError, ImportError):
    """An inference runtime that is not installed (the message names the package to install)."""


class PrecisionUnavailableError(EmbeddingConfigError):
    """A precision that the runtime does not implement or this machine cannot run natively."""


class ModelConversionError(EmbeddingError, RuntimeError):
    """A network that the runtime cannot convert, or whose converted form gives other vectors."""


class IRCacheError(EmbeddingError, ValueError):
    """A cached converted model whose files do not match their recorded sha256."""


class TuneError(EmbeddingError, ValueError):
    """Bad input to self-supervised tuning: too few tiles, a base model without weights, a
    budget too small for one round, or a weight state or delta with non-finite values or the
    wrong tensors, shapes or dtype."""
