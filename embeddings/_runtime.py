"""Which runtime and precision this machine runs, and the numerical class of its vectors.

Vectors computed with another runtime or precision differ by more than thread-count noise, so
replicas of a work unit are only compared within one *numerical class* (BOINC's homogeneous
redundancy): ``"<runtime>-<precision>"``, plus the instruction set where it changes results
(``"openvino-bf16-amx"``). Native support is detected at run time, never assumed.
"""

from __future__ import annotations

import functools
import importlib
import logging
import platform
from dataclasses import dataclass

from embeddings._config import PRECISIONS, EmbedConfig
from embeddings.errors import (
    EmbeddingConfigError,
    PrecisionUnavailableError,
    RuntimeUnavailableError,
)

__all__ = [
    "CLASS_MIN_COSINE",
    "Resolved",
    "class_min_cosine",
    "class_resources",
    "config_for_class",
    "cpu_flags",
    "installed_runtimes",
    "native_precisions",
    "numerical_class",
    "resolve",
    "runnable_classes",
]

logger = logging.getLogger("embeddings")

#: Python module of each runtime.
_MODULES = {"torch": "torch", "openvino": "openvino", "onnxruntime": "onnxruntime"}
#: Precisions each runtime implements here.
_SUPPORTED = {"torch": ("fp32", "bf16"), "openvino": PRECISIONS, "onnxruntime": ("fp32",)}
_INSTALL = {
    "openvino": "pip install openvino (wheels for x86-64 and ARM64)",
    "onnxruntime": "pip install onnxruntime onnx",
    "torch": "pip install torch",
}

#: Smallest per-tile cosine between two honest replicas of one unit, per numerical class:
#: ``benchmarks/embedding.py`` measures ``1 - cos`` of the pooled vectors of the same real HST
#: tiles computed with 1 and 2 threads and two batch sizes (``honest 1-cos`` figures) and these
#: values keep a safety margin of >= 100x above what it measured. Classes that this project could
#: not measure on native hardware keep the conservative grid default, 0.9999.
CLASS_MIN_COSINE: dict[str, float] = {
    "torch-fp32": 0.99999,
    "openvino-fp32": 0.99999,
    "onnxruntime-fp32": 0.99999,
    "openvino-int8": 0.9999,
    "torch-bf16": 0.9999,
    "openvino-bf16": 0.9999,
}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (``/proc/cpuinfo`` ``flags`` or ``Features``)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


@functools.cache
def _openvino_capabilities() -> frozenset[str]:
    import openvino as ov

    return frozenset(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def _imports(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def installed_runtimes() -> tuple[str, ...]:
    """Runtimes whose Python package imports here (``"torch"`` always).

    Returns
    -------
    tuple of str
        Among ``"openvino"``, ``"torch"`` and ``"onnxruntime"``.
    """
    return tuple(r for r, mod in _MODULES.items() if _imports(mod))


def _bf16_isa() -> str | None:
    """The native bfloat16 instruction set of this CPU, if any."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512bf16"
    if "bf16" in flags and platform.machine().lower() in ("aarch64", "arm64"):
        return "armbf16"
    return None


def native_precisions(runtime: str) -> tuple[str, ...]:
    """Precisions ``runtime`` runs natively on this machine (not emulated).

    bf16 needs AMX or AVX512-BF16 (or Arm BF16) in the CPU flags, and for OpenVINO also ``BF16``
    in its ``OPTIMIZATION_CAPABILITIES``; int8 needs ``INT8`` there.

    Parameters
    ----------
    runtime : str
        ``"openvino"``, ``"torch"`` or ``"onnxruntime"``.

    Returns
    -------
    tuple of str
        ``"fp32"`` first, then ``"bf16"`` and/or ``"int8"`` where available.
    """
    out = ["fp32"]
    isa = _bf16_isa()
    if runtime == "torch" and isa is not None:
        out.append("bf16")
    if runtime == "openvino":
        caps = _openvino_capabilities()
        if isa is not None and "BF16" in caps:
            out.append("bf16")
        if "INT8" in caps:
            out.append("int8")
    return tuple(out)


@dataclass(frozen=True)
class Resolved:
    """The runtime and precision a configuration runs with on this machine.

    Attributes
    ----------
    runtime : str
        ``"openvino"``, ``"torch"`` or ``"onnxruntime"``.
    precision : str
        ``"fp32"``, ``"bf16"`` or ``"int8"``.
    isa : str
        The instruction set that matters for the precision (``"amx"``, ``"avx512bf16"``) or "".
    note : str
        Why ``"auto"`` chose differently from what was asked, or "".
    """

    runtime: str
    precision: str
    isa: str = ""
    note: str = ""

    @property
    def numerical_class(self) -> str:
        """``runtime-precision[-isa]``, e.g. ``"openvino-fp32"``, ``"openvino-bf16-amx"``."""
        return "-".join(p for p in (self.runtime, self.precision, self.isa) if p)


def resolve(config: EmbedConfig, prefer: str = "", why: str = "") -> Resolved:
    """The runtime and precision ``config`` runs with here.

    Parameters
    ----------
    config : EmbedConfig
        Its ``runtime`` (or ``"auto"``) and ``precision`` are resolved.
    prefer : str
        The runtime ``"auto"`` means for this network (its :attr:`ModelSpec.auto_runtime`), when
        installed; "" = OpenVINO if installed, else torch.
    why : str
        The reason for ``prefer``, kept in :attr:`Resolved.note`.

    Returns
    -------
    Resolved
        The runtime, precision and instruction set used, and a note when ``"auto"`` fell back.

    Raises
    ------
    RuntimeUnavailableError
        A named runtime that is not installed.
    PrecisionUnavailableError
        A named runtime with a precision it does not implement or this machine cannot run
        natively. ``runtime="auto"`` falls back to fp32 instead, with a logged warning.
    """
    asked, precision = config.runtime, config.precision
    runtime = asked
    preferred_note = ""
    if asked == "auto" and prefer and prefer in installed_runtimes():
        runtime = prefer
        preferred_note = f"runtime 'auto' runs this network on {prefer}: {why}" if why else ""
    elif asked == "auto":
        runtime = "openvino" if "openvino" in installed_runtimes() else "torch"
        if precision == "int8" and runtime != "openvino":
            runtime = "torch"
    elif asked not in installed_runtimes():
        msg = (
            f"runtime {asked!r} is not installed in this environment; install it "
            f"({_INSTALL[asked]}) or choose runtime='auto' (OpenVINO if installed, else torch)"
        )
        raise RuntimeUnavailableError(msg)
    native = native_precisions(runtime)
    if precision in native:
        isa = (_bf16_isa() or "") if precision == "bf16" else ""
        return Resolved(runtime, precision, isa, preferred_note)
    if precision not in _SUPPORTED[runtime]:
        why = f"runtime {runtime!r} does not implement precision {precision!r}"
        fix = f"choose one of {_SUPPORTED[runtime]} or another runtime"
    else:
        why = (
            f"this machine cannot run {precision} natively with {runtime} (natively: "
            f"{', '.join(native)}; bf16 needs AMX or AVX512-BF16, CPU flags seen: "
            f"{_bf16_flags() or 'none of them'})"
        )
        fix = "choose precision='fp32', or run on a machine that has it"
    if asked == "auto":
        note = f"{why}: falling back to {runtime} fp32 (other vectors, other digest)"
        logger.warning("embeddings: %s", note)
        return Resolved(runtime, "fp32", "", note)
    raise PrecisionUnavailableError(f"{why}; {fix}")


def _bf16_flags() -> str:
    return ", ".join(sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx")))


def numerical_class(config: EmbedConfig | object | None = None) -> str:
    """The numerical class of the vectors ``config`` computes on this machine.

    Parameters
    ----------
    config : EmbedConfig, EmbeddingModel or None
        A configuration (resolved here), or a loaded model (its resolved runtime); None is the
        default :class:`EmbedConfig`.

    Returns
    -------
    str
        ``"<runtime>-<precision>[-<isa>]"``: ``"openvino-fp32"``, ``"torch-fp32"``,
        ``"openvino-bf16-amx"``... Replicas of one unit are only compared within one class.

    Raises
    ------
    RuntimeUnavailableError, PrecisionUnavailableError
        As for :func:`resolve`.
    """
    resolved = getattr(config, "resolved", None)
    if isinstance(resolved, Resolved):
        return resolved.numerical_class
    return resolve(config if isinstance(config, EmbedConfig) else EmbedConfig()).numerical_class


def class_min_cosine(numerical_class: str) -> float:
    """The calibrated minimum replica cosine of a class (see :data:`CLASS_MIN_COSINE`).

    The instruction-set suffix is ignored (``"openvino-bf16-amx"`` uses ``"openvino-bf16"``);
    an unknown class gets the conservative 0.9999.

    Parameters
    ----------
    numerical_class : str
        ``"<runtime>-<precision>[-<isa>]"``.

    Returns
    -------
    float
        Minimum cosine between two replicas' vectors of one tile for them to agree.
    """
    base = "-".join(numerical_class.split("-")[:2])
    return CLASS_MIN_COSINE.get(base, 0.9999)


def runnable_classes() -> tuple[str, ...]:
    """Every numerical class this machine runs natively with the runtimes installed here.

    A volunteer advertises these (one Dask worker resource each) so that replicas of one unit
    are placed within one class. int8 is left out: it needs calibration tiles at load.

    Returns
    -------
    tuple of str
        Numerical class names (``"openvino-fp32"``, ``"torch-bf16-amx"``...).
    """
    out = []
    for runtime in installed_runtimes():
        for precision in native_precisions(runtime):
            if precision in _SUPPORTED[runtime] and precision != "int8":
                out.append(resolve(EmbedConfig(runtime=runtime, precision=precision)))
    return tuple(r.numerical_class for r in out)


def class_resources() -> dict[str, float]:
    """Dask worker resources advertising :func:`runnable_classes`: ``{"class-<cls>": 1}``.

    Returns
    -------
    dict of str to float
        One resource per runnable class, each 1.0.
    """
    return {f"class-{cls}": 1.0 for cls in runnable_classes()}


def config_for_class(numerical_class: str, **changes) -> EmbedConfig:
    """The :class:`EmbedConfig` that computes vectors of ``numerical_class`` on this machine.

    Parameters
    ----------
    numerical_class : str
        E.g. ``"openvino-fp32"`` or ``"torch-bf16-amx"`` (see :func:`numerical_class`).
    **changes
        Other :class:`EmbedConfig` fields (``threads``, ``batch_size``...).

    Returns
    -------
    EmbedConfig
        With the class's runtime and precision.

    Raises
    ------
    EmbeddingConfigError
        Not a class name.
    RuntimeUnavailableError, PrecisionUnavailableError
        This machine cannot compute that class (another runtime, precision or instruction set).
    """
    parts = str(numerical_class).split("-")
    if len(parts) < 2:
        msg = f"numerical class {numerical_class!r} is not '<runtime>-<precision>[-<isa>]'"
        raise EmbeddingConfigError(msg)
    config = EmbedConfig(runtime=parts[0], precision=parts[1], **changes)
    here = resolve(config).numerical_class
    if here != numerical_class:
        msg = (
            f"this machine computes {here!r}, not the numerical class {numerical_class!r} asked "
            "for (another instruction set); place the replica on a worker that advertises it"
        )
        raise PrecisionUnavailableError(msg)
    return config
