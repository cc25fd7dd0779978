"""Configuration of the embedding stage: one frozen dataclass, overridable by environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from embeddings.errors import EmbeddingConfigError

__all__ = ["ENV_CACHE", "ENV_PRECISION", "ENV_RUNTIME", "PRECISIONS", "RUNTIMES", "EmbedConfig"]

#: Inference runtimes; ``"auto"`` is OpenVINO where it imports, torch otherwise.
RUNTIMES = ("auto", "openvino", "torch", "onnxruntime")
#: Arithmetic of the forward pass.
PRECISIONS = ("fp32", "bf16", "int8")
#: Environment variables that override the defaults of :class:`EmbedConfig`. Worker processes
#: inherit them, so a choice made by ``hubcat run --runtime ...`` reaches every local worker.
ENV_RUNTIME = "HUBCAT_EMBED_RUNTIME"
ENV_PRECISION = "HUBCAT_EMBED_PRECISION"
ENV_CACHE = "HUBCAT_IR_CACHE"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip().lower() or default


@dataclass(frozen=True)
class EmbedConfig:
    """Configuration of the embedding stage.

    Defaults come from the environment (``HUBCAT_EMBED_RUNTIME``, ``HUBCAT_EMBED_PRECISION``,
    ``HUBCAT_IR_CACHE``) when set, so a run's choice reaches worker processes unchanged.

    Attributes
    ----------
    runtime : {"auto", "openvino", "torch", "onnxruntime"}
        Inference runtime. ``"auto"`` (the default) is OpenVINO where it imports and torch
        otherwise, and falls back (logged) to fp32 where the machine cannot run ``precision``
        natively; a named runtime never falls back: it runs as asked or raises.
    precision : {"fp32", "bf16", "int8"}
        Arithmetic of the forward pass. ``"bf16"`` needs native bfloat16 (AMX or AVX512-BF16);
        ``"int8"`` is OpenVINO post-training quantisation calibrated on tiles (needs ``nncf``).
        Recorded in the digest because it changes vectors; the runtime is recorded in the
        :func:`~embeddings.numerical_class`.
    batch_size : int
        Images per forward pass (each tile contributes 8 augmented images).
    channels_last : bool
        Run the torch network in channels-last memory format (faster on CPU; same results).
    threads : int or None
        Intra-op threads while embedding; None keeps the process setting (torch's thread count,
        which a Dask worker sets from its thread budget).
    cache_dir : str or None
        Folder of converted models (OpenVINO IR, ONNX), keyed by weights, runtime version and
        precision; None is ``$HUBCAT_IR_CACHE`` or ``~/.cache/hubcat/ir``.
    """

    runtime: str = field(default_factory=lambda: _env(ENV_RUNTIME, "auto"))
    precision: str = field(default_factory=lambda: _env(ENV_PRECISION, "fp32"))
    batch_size: int = 64
    channels_last: bool = True
    threads: int | None = None
    cache_dir: str | None = field(default_factory=lambda: os.environ.get(ENV_CACHE) or None)

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            msg = (
                f"runtime {self.runtime!r} is not supported; choose one of {RUNTIMES} "
                f"(check {ENV_RUNTIME} if you did not set it)"
            )
            raise EmbeddingConfigError(msg)
        if self.precision not in PRECISIONS:
            msg = (
                f"precision {self.precision!r} is not supported; choose one of {PRECISIONS} "
                f"(check {ENV_PRECISION} if you did not set it)"
            )
            raise EmbeddingConfigError(msg)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            msg = f"batch_size {self.batch_size!r} must be a positive integer (images per pass)"
            raise EmbeddingConfigError(msg)
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            msg = f"threads {self.threads!r} must be a positive integer or None"
            raise EmbeddingConfigError(msg)
