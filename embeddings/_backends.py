"""Inference runtimes behind one call: normalised images in, pooled pre-logits features out.

Each backend is built once per process from the loaded (verified) torch network:

- :class:`TorchBackend`: the timm network itself (channels-last, optional bf16 autocast);
- :class:`OpenVINOBackend`: ``openvino.convert_model`` of the network, compiled for the CPU with
  an explicit inference precision and thread count (the IR is cached, see :mod:`._convert`);
- :class:`OnnxRuntimeBackend`: ``torch.onnx.export`` of the network in ONNX Runtime (fp32).

The converted backends run the whole stage but pooling as one graph (:class:`StageNet`: tiles
in, the 8 augmentations, normalisation and network inside), so that reading, augmenting and
normalising in Python never becomes the bottleneck of a runtime 4-10x faster than torch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embeddings._convert import (
    PreLogits,
    StageNet,
    cached_conversion,
    check_probe,
    probe_batch,
    quiet_tracing,
)
from embeddings._runtime import Resolved
from embeddings.errors import (
    EmbeddingConfigError,
    ModelConversionError,
    PrecisionUnavailableError,
)

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


class _Converted(Backend):
    """A backend running converted graphs of the network: ``"stage"`` (:class:`StageNet`, tiles
    in) and, on demand, ``"net"`` (:class:`PreLogits`, normalised images in)."""

    runtime = ""
    label = ""

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
        self.net, self.spec, self.resolved = net, spec, resolved
        self.threads, self.cache_dir = int(threads), cache_dir
        self.version = self._version()
        self.fields = _key_fields(
            spec, weights_sha256, self.runtime, self.version, resolved.precision
        )
        self.calibration = calibration
        if resolved.precision == "int8":
            if calibration is None:
                msg = (
                    "precision='int8' needs calibration tiles: pass load_model(..., "
                    "calibration=tiles) with a few hundred of the project's own tiles"
                )
                raise EmbeddingConfigError(msg)
            from embeddings._quantize import require_nncf

            require_nncf()  # before converting anything
            self.fields["calibration_sha256"] = _array_sha256(calibration)
        self.folders: dict[str, Path] = {}
        self._runs: dict[str, Any] = {}
        self._runs["stage"] = self._graph("stage")

    # -- what a runtime provides
    def _version(self) -> str:
        raise NotImplementedError

    def _convert(self, module: torch.nn.Module, example: np.ndarray, folder: Path) -> None:
        raise NotImplementedError

    def _load(self, folder: Path, fp32: bool = False):
        """A callable ``f(x: ndarray) -> ndarray`` running the graph in ``folder``."""
        raise NotImplementedError

    # -- shared
    def _graph(self, kind: str):
        spec = self.spec
        if kind == "stage":
            module: torch.nn.Module = StageNet(self.net, spec.mean, spec.std).eval()
            probe = probe_batch(spec.input_size, 2)
        else:
            module = PreLogits(self.net).eval()
            probe = probe_batch(spec.input_size, 3) * 2.0 - 1.0
        # traced on the first probe, checked on the others: a value the tracer froze shows up
        example, check = probe[:1], probe[1:]

        def convert(folder: Path) -> None:
            try:
                with quiet_tracing():
                    self._convert(module, example, folder)
            except ModelConversionError:
                raise
            except Exception as exc:
                msg = (
                    f"{self.label} {self.version} cannot convert {spec.name}: "
                    f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}; use "
                    "runtime='torch' for this model"
                )
                raise ModelConversionError(msg) from exc
            with torch.inference_mode():
                want = module(torch.from_numpy(check)).float().numpy()
            check_probe(spec.name, self.label, self._load(folder, fp32=True)(check), want)
            if self.resolved.precision == "int8":
                data = self.calibration
                if kind == "net":  # the same tiles, as the plain network sees them
                    with torch.inference_mode():
                        stage = StageNet(self.net, spec.mean, spec.std)
                        data = stage.images(torch.from_numpy(data)).numpy()
                self._quantize(folder, data)

        fields = {**self.fields, "graph": kind}
        self.folders[kind] = cached_conversion(self.runtime, fields, self.cache_dir, convert)
        return self._load(self.folders[kind])

    def _quantize(self, folder: Path, calibration: np.ndarray) -> None:
        msg = f"{self.label} has no int8 path here"
        raise EmbeddingConfigError(msg)

    def views(self, tiles: np.ndarray) -> torch.Tensor:
        """Per-augmentation features ``(8 n, D)`` of tiles ``(n, C, H, W)`` in [0, 1]."""
        return torch.from_numpy(self._runs["stage"](tiles))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if "net" not in self._runs:
            self._runs["net"] = self._graph("net")
        x = np.ascontiguousarray(images.numpy())
        return torch.from_numpy(self._runs["net"](x))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), self.runtime: self.version}


class OpenVINOBackend(_Converted):
    """The network converted to OpenVINO IR (``openvino.convert_model``), compiled for the CPU
    with an explicit inference precision and ``INFERENCE_NUM_THREADS``."""

    runtime = "openvino"
    label = "OpenVINO"

    def _version(self) -> str:
        import openvino as ov

        return ov.get_version()

    def _convert(self, module: torch.nn.Module, example: np.ndarray, folder: Path) -> None:
        import openvino as ov

        # traced here once, without torch's re-run check (the probe check below is stricter)
        traced = torch.jit.trace(module, torch.from_numpy(example[:1]), check_trace=False)
        model = ov.convert_model(
            traced, example_input=torch.from_numpy(example[:1]), input=[(-1, *example.shape[1:])]
        )
        ov.save_model(model, folder / "model.xml", compress_to_fp16=False)

    def _quantize(self, folder: Path, calibration: np.ndarray) -> None:
        import openvino as ov

        from embeddings._quantize import quantize_int8

        model = quantize_int8(ov.Core().read_model(folder / "model.xml"), calibration)
        for name in ("model.xml", "model.bin"):
            (folder / name).unlink()
        ov.save_model(model, folder / "model.xml", compress_to_fp16=False)

    def _load(self, folder: Path, fp32: bool = False):
        import openvino as ov

        core = ov.Core()
        precision = "fp32" if fp32 else self.resolved.precision
        compiled = core.compile_model(
            core.read_model(folder / "model.xml"), "CPU", _options(self.threads, precision)
        )
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        got = getattr(hint, "get_type_name", lambda: str(hint))()
        want = "bf16" if precision == "bf16" else "f32"
        if got != want:  # OpenVINO silently ignores a hint it cannot honour
            msg = (
                f"OpenVINO compiled {self.spec.name} with inference precision {got}, not {want}: "
                "this CPU cannot run it natively; choose precision='fp32'"
            )
            raise PrecisionUnavailableError(msg)
        local = threading.local()  # an infer request is not thread-safe: one per thread

        def run(x: np.ndarray) -> np.ndarray:
            request = getattr(local, "request", None)
            if request is None:
                request = local.request = compiled.create_infer_request()
            x = np.ascontiguousarray(x, dtype=np.float32)
            out = request.infer({0: x}, share_inputs=True, share_outputs=True)[0]
            return np.array(out, dtype=np.float32, copy=True)

        return run


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


class OnnxRuntimeBackend(_Converted):
    """The network exported with ``torch.onnx.export`` and run by ONNX Runtime's CPU provider."""

    runtime = "onnxruntime"
    label = "ONNX Runtime"

    def _version(self) -> str:
        import onnxruntime as ort

        return ort.__version__

    def _convert(self, module: torch.nn.Module, example: np.ndarray, folder: Path) -> None:
        torch.onnx.export(
            module,
            (torch.from_numpy(example[:1]),),
            str(folder / "model.onnx"),
            input_names=["x"],
            output_names=["features"],
            dynamic_axes={"x": {0: "batch"}, "features": {0: "batch"}},
            dynamo=False,
        )

    def _load(self, folder: Path, fp32: bool = False):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"]
        )

        def run(x: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(x, dtype=np.float32)
            return session.run(None, {"x": x})[0].astype(np.float32, copy=False)

        return run


def build_backend(model, resolved: Resolved, calibration: np.ndarray | None = None) -> Backend:
    """The backend of ``resolved`` for a loaded :class:`~embeddings.EmbeddingModel`."""
    config = model.config
    threads = config.threads or torch.get_num_threads()
    if resolved.runtime == "torch":
        return TorchBackend(model.net, resolved, config.channels_last)
    args = (model.net, model.spec, model.weights_sha256, resolved, threads, config.cache_dir)
    kind = OpenVINOBackend if resolved.runtime == "openvino" else OnnxRuntimeBackend
    backend: Backend = kind(*args, calibration=calibration)
    logger.info(
        "embeddings: %s runs as %s (%d threads)", model.name, resolved.numerical_class, threads
    )
    return backend
