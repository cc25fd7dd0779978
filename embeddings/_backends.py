"""Inference runtimes behind one call: normalised images in, pooled pre-logits features out.

Each backend is built once per process from the loaded (verified) torch network:

- :class:`TorchBackend`: the timm network itself (channels-last, optional bf16 autocast);
- :class:`OpenVINOBackend`: ``openvino.convert_model`` of the network, compiled for the CPU with
  an explicit inference precision and thread count (the IR is cached, see :mod:`._convert`);
- :class:`OnnxRuntimeBackend`: ``torch.onnx.export`` of the network in ONNX Runtime (fp32).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embeddings._convert import (
    PreLogits,
    cached_conversion,
    check_probe,
    probe_batch,
    quiet_tracing,
)
from embeddings._runtime import Resolved
from embeddings.errors import EmbeddingConfigError, ModelConversionError

__all__ = ["Backend", "OnnxRuntimeBackend", "OpenVINOBackend", "TorchBackend", "build_backend"]

logger = logging.getLogger("embeddings")


class Backend:
    """A runtime that maps normalised images ``(B, C, H, W)`` to features ``(B, D)``.

    Attributes
    ----------
    resolved : Resolved
        Runtime, precision and instruction set it runs with.
    channels_last : bool
        Whether it wants its input in channels-last memory format.
    """

    resolved: Resolved
    channels_last: bool = False

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logits features, float32 ``(B, D)``, of normalised ``images``."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What is recorded about this backend (runtime version, options)."""
        return {"numerical_class": self.resolved.numerical_class}


class TorchBackend(Backend):
    """The timm network in torch (fp32, or bf16 autocast on native bf16 hardware)."""

    def __init__(self, net: torch.nn.Module, resolved: Resolved, channels_last: bool) -> None:
        self.net = net
        self.resolved = resolved
        self.channels_last = channels_last

    def _autocast(self):
        if self.resolved.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self._autocast():
            feats = self.net.forward_features(images)
            out = self.net.forward_head(feats, pre_logits=True)
        return out.float()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "torch": torch.__version__}


def _key_fields(spec, weights_sha256: str, runtime: str, version: str, precision: str) -> dict:
    import timm

    return {
        "timm_name": spec.timm_name,
        "model_args": spec.model_args,
        "num_classes": spec.num_classes,
        "input_size": list(spec.input_size),
        "weights_sha256": weights_sha256,
        "runtime": runtime,
        "runtime_version": version,
        "precision": precision,
        "torch": torch.__version__,
        "timm": timm.__version__,
    }


def _torch_reference(net: torch.nn.Module, probe: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return PreLogits(net)(torch.from_numpy(probe)).float().numpy()


class OpenVINOBackend(Backend):
    """The network converted to OpenVINO IR and compiled for the CPU.

    Parameters
    ----------
    net : torch.nn.Module
        The loaded timm network (source of the conversion and of the probe check).
    spec : ModelSpec
    weights_sha256 : str
    resolved : Resolved
    threads : int
        ``INFERENCE_NUM_THREADS``.
    cache_dir : str or None
        See :class:`~embeddings.EmbedConfig`.
    calibration : numpy.ndarray or None
        Normalised images ``(N, C, H, W)`` for int8 post-training quantisation.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        spec,
        weights_sha256: str,
        resolved: Resolved,
        threads: int,
        cache_dir: str | None,
        calibration: np.ndarray | None = None,
    ) -> None:
        import openvino as ov

        self.resolved = resolved
        self.threads = threads
        self.version = ov.get_version()
        fields = _key_fields(spec, weights_sha256, "openvino", self.version, resolved.precision)
        if resolved.precision == "int8":
            if calibration is None:
                msg = (
                    "precision='int8' needs calibration tiles: pass load_model(..., "
                    "calibration=tiles) with a few hundred of the project's own tiles"
                )
                raise EmbeddingConfigError(msg)
            fields["calibration_sha256"] = _array_sha256(calibration)

        def convert(folder: Path) -> None:
            probe = probe_batch(spec.input_size)
            try:
                with quiet_tracing():
                    model = ov.convert_model(
                        PreLogits(net).eval(),
                        example_input=torch.from_numpy(probe[:1]),
                        input=[(-1, *spec.input_size)],
                    )
            except Exception as exc:
                msg = (
                    f"OpenVINO {self.version} cannot convert {spec.name}: {type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:400]}; use runtime='torch' for this model"
                )
                raise ModelConversionError(msg) from exc
            compiled = ov.Core().compile_model(model, "CPU", _options(threads, "fp32"))
            check_probe(spec.name, "OpenVINO", compiled(probe)[0], _torch_reference(net, probe))
            if resolved.precision == "int8":
                from embeddings._quantize import quantize_int8

                model = quantize_int8(model, calibration)
            ov.save_model(model, folder / "model.xml", compress_to_fp16=False)

        self.folder = cached_conversion("openvino", fields, cache_dir, convert)
        core = ov.Core()
        self.compiled = core.compile_model(
            core.read_model(self.folder / "model.xml"),
            "CPU",
            _options(threads, resolved.precision),
        )
        self.request = self.compiled.create_infer_request()
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        got = getattr(hint, "get_type_name", lambda: str(hint))()
        want = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}[resolved.precision]
        if got != want:  # OpenVINO silently ignores a hint it cannot honour
            msg = (
                f"OpenVINO compiled {spec.name} with inference precision {got}, not {want}: "
                "this CPU cannot run it natively; choose precision='fp32'"
            )
            raise EmbeddingConfigError(msg)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = images.numpy()
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        out = self.request.infer({0: x}, share_inputs=True, share_outputs=True)
        return torch.from_numpy(np.array(out[0], dtype=np.float32, copy=True))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "openvino": self.version,
            "threads": self.threads,
            "ir": str(self.folder),
        }


def _options(threads: int, precision: str) -> dict[str, Any]:
    return {
        "INFERENCE_NUM_THREADS": int(threads),
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "ENABLE_CPU_PINNING": False,
    }


def _array_sha256(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


class OnnxRuntimeBackend(Backend):
    """The network exported to ONNX and run by ONNX Runtime's CPU provider (fp32)."""

    def __init__(
        self,
        net: torch.nn.Module,
        spec,
        weights_sha256: str,
        resolved: Resolved,
        threads: int,
        cache_dir: str | None,
    ) -> None:
        import onnxruntime as ort

        self.resolved = resolved
        self.version = ort.__version__
        fields = _key_fields(spec, weights_sha256, "onnxruntime", self.version, "fp32")

        def convert(folder: Path) -> None:
            probe = probe_batch(spec.input_size)
            path = folder / "model.onnx"
            try:
                with quiet_tracing():
                    torch.onnx.export(
                        PreLogits(net).eval(),
                        (torch.from_numpy(probe[:1]),),
                        str(path),
                        input_names=["images"],
                        output_names=["features"],
                        dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                        dynamo=False,
                    )
            except Exception as exc:
                msg = (
                    f"torch.onnx cannot export {spec.name}: {type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:400]}; use runtime='openvino' or 'torch'"
                )
                raise ModelConversionError(msg) from exc
            session = _session(ort, path, threads)
            got = session.run(None, {"images": probe})[0]
            check_probe(spec.name, "ONNX Runtime", got, _torch_reference(net, probe))

        self.folder = cached_conversion("onnxruntime", fields, cache_dir, convert)
        self.session = _session(ort, self.folder / "model.onnx", threads)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(images.numpy())
        return torch.from_numpy(self.session.run(None, {"images": x})[0].astype(np.float32))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "onnxruntime": self.version, "onnx": str(self.folder)}


def _session(ort, path: Path, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def build_backend(model, resolved: Resolved, calibration: np.ndarray | None = None) -> Backend:
    """The backend of ``resolved`` for a loaded :class:`~embeddings.EmbeddingModel`."""
    config = model.config
    threads = config.threads or torch.get_num_threads()
    if resolved.runtime == "torch":
        return TorchBackend(model.net, resolved, config.channels_last)
    args = (model.net, model.spec, model.weights_sha256, resolved, threads, config.cache_dir)
    if resolved.runtime == "openvino":
        backend: Backend = OpenVINOBackend(*args, calibration=calibration)
    else:
        backend = OnnxRuntimeBackend(*args)
    logger.info(
        "embeddings: %s runs as %s (%d threads)", model.name, resolved.numerical_class, threads
    )
    return backend
