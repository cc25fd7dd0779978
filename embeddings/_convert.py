"""Converting the timm network for another runtime, with a verified on-disk cache.

A converted model (OpenVINO IR, ONNX) is made from the loaded torch network at load time, checked
against it on a probe batch, and kept under ``<cache>/<runtime>/<key>/`` with a ``manifest.json``
recording the sha256 of every file. The key covers everything the converted file depends on
(weights sha256, architecture, input size, runtime, torch, timm and hubcat recipe versions,
precision). A cached file is re-hashed before every use, like the weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embeddings._weights import sha256_file
from embeddings.errors import IRCacheError, ModelConversionError

__all__ = [
    "PreLogits",
    "StageNet",
    "cache_root",
    "cached_conversion",
    "conversion_key",
    "probe_batch",
]

#: Bump when the conversion itself changes (another wrapper, other options).
CONVERSION_VERSION = 1
#: A converted fp32 network must give the torch network's features within this cosine.
PROBE_MIN_COSINE = 0.99999


class PreLogits(torch.nn.Module):
    """The network's pooled pre-logits features as its only output (what gets converted)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)


def _rot90(x: torch.Tensor, k: int) -> torch.Tensor:
    """``torch.rot90(x, k, dims=(-2, -1))`` as flips and a transpose (ops every converter has)."""
    if k == 0:
        return x
    if k == 1:
        return x.flip(-1).transpose(-2, -1)
    if k == 2:
        return x.flip(-1).flip(-2)
    return x.transpose(-2, -1).flip(-1)


class StageNet(torch.nn.Module):
    """The whole embed stage but pooling, as one network: tiles in, per-augmentation features out.

    Input: tiles ``(n, C, H, W)`` in [0, 1] at the network's input size (single-band tiles are
    given replicated to the C channels). It makes the 8 flips/rotations in the order of
    :func:`tiling.augment.augment` (augmentation-minor), normalises ``(x - mean) / std`` and runs
    the network: output ``(8 n, D)`` pre-logits features. Converted runtimes fuse these steps,
    so the stage costs what the bare network costs.
    """

    def __init__(self, net: torch.nn.Module, mean, std) -> None:
        super().__init__()
        self.features = PreLogits(net)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised network input ``(8 n, C, H, W)`` of tiles ``x``."""
        flipped = x.flip(-1)
        views = [_rot90(src, k) for src in (x, flipped) for k in range(4)]
        images = torch.stack(views, dim=1).flatten(0, 1)
        return (images - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.images(x))


def cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The cache folder: ``cache_dir``, else ``$XDG_CACHE_HOME/hubcat/ir`` (``~/.cache``)."""
    if cache_dir:
        return Path(cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hubcat" / "ir"


def conversion_key(fields: dict[str, Any]) -> str:
    """Cache key: sha256 (hex, 32 chars) of ``fields`` as canonical JSON."""
    text = json.dumps({"conversion": CONVERSION_VERSION, **fields}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def probe_batch(input_size: tuple[int, int, int], n: int = 2) -> np.ndarray:
    """Seeded probe tiles, float32 ``(n, C, H, W)`` in [0, 1], each of another brightness."""
    rng = np.random.default_rng(12345)
    powers = np.arange(1, 2 * n, 2, dtype=np.float64).reshape(n, 1, 1, 1)
    return (rng.uniform(0.0, 1.0, size=(n, *input_size)) ** powers).astype(np.float32)


@contextlib.contextmanager
def quiet_tracing() -> Iterator[None]:
    """Silence torch's tracing deprecation warnings raised inside the converters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def check_probe(name: str, runtime: str, got: np.ndarray, want: np.ndarray) -> None:
    """Raise :class:`ModelConversionError` unless the converted features match torch's."""
    got = np.asarray(got, dtype=np.float64).reshape(len(want), -1)
    want = np.asarray(want, dtype=np.float64).reshape(len(want), -1)
    if got.shape != want.shape or not np.isfinite(got).all():
        msg = (
            f"{runtime} conversion of {name} gives features of shape {got.shape} (finite: "
            f"{bool(np.isfinite(got).all())}), expected {want.shape}; use runtime='torch' for "
            "this model"
        )
        raise ModelConversionError(msg)
    norm = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
    cos = np.sum(got * want, axis=1) / np.maximum(norm, 1e-30)
    if float(cos.min()) < PROBE_MIN_COSINE:
        msg = (
            f"{runtime} conversion of {name} gives other features than the torch network "
            f"(probe cosine {float(cos.min()):.6f} < {PROBE_MIN_COSINE}): the network has "
            "operations the converter cannot follow; use runtime='torch' for this model"
        )
        raise ModelConversionError(msg)


def _manifest_files(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p, cached=False) for p in sorted(folder.iterdir()) if p.is_file()}


def cached_conversion(
    runtime: str,
    key_fields: dict[str, Any],
    cache_dir: str | os.PathLike[str] | None,
    convert: Callable[[Path], None],
) -> Path:
    """The folder of a converted model: from the cache after a sha256 check, else converted.

    Parameters
    ----------
    runtime : str
        Sub-folder of the cache (``"openvino"``, ``"onnxruntime"``).
    key_fields : dict
        What the converted files depend on (see :func:`conversion_key`).
    cache_dir : path-like or None
        Cache root (see :func:`cache_root`).
    convert : callable
        ``convert(folder)`` writes the converted files into an empty ``folder`` (and checks them).

    Returns
    -------
    pathlib.Path
        Folder holding the files and ``manifest.json``.

    Raises
    ------
    IRCacheError
        A cached file whose sha256 differs from its manifest, or an unreadable manifest.
    """
    root = cache_root(cache_dir) / runtime
    key = conversion_key(key_fields)
    folder = root / key
    manifest = folder / "manifest.json"
    if manifest.is_file():
        verify_cached(folder)
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        convert(tmp)
        files = _manifest_files(tmp)
        record = {"key": key, "fields": key_fields, "files": files}
        (tmp / "manifest.json").write_text(json.dumps(record, indent=1, sort_keys=True))
        try:
            os.replace(tmp, folder)  # atomic; another process may have won the race
        except OSError:
            if not manifest.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    verify_cached(folder)
    return folder


def verify_cached(folder: Path) -> dict[str, Any]:
    """Re-hash every file of a cached conversion against its ``manifest.json``.

    Raises
    ------
    IRCacheError
        If the manifest is unreadable, a file is missing or its sha256 differs.
    """
    fix = f"delete {folder} (it is converted again from the verified weights at the next load)"
    try:
        record = json.loads((folder / "manifest.json").read_text())
        files = dict(record["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        msg = f"converted-model cache {folder} has an unreadable manifest.json ({exc}); {fix}"
        raise IRCacheError(msg) from exc
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            msg = f"converted-model cache {folder} lacks {name} listed in its manifest; {fix}"
            raise IRCacheError(msg)
        got = sha256_file(path, cached=False)
        if got != want:
            msg = (
                f"converted-model cache file {path} has sha256 {got}, its manifest records "
                f"{want}: the file is corrupt or was modified; {fix}"
            )
            raise IRCacheError(msg)
    return record
