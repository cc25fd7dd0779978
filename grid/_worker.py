"""Worker-side helpers: the model, loaded once per process and verified before use.

Used by the volunteer preload (:mod:`grid.volunteer`) and by :class:`ModelPlugin`, which does
the same for the local cluster that :func:`grid.run_units` starts.
"""

from __future__ import annotations

import logging
import threading

from distributed.diagnostics.plugin import WorkerPlugin

from grid.errors import ModelVerificationError

__all__ = [
    "MODEL_DIRS_ENV",
    "ModelPlugin",
    "hardware_class",
    "installed_model_dirs",
    "keep_freed_memory",
    "resolve_model_dir",
    "set_torch_threads",
    "worker_model",
    "worker_threads_and_ca",
]

#: Tuned model folders (``hubcat tune``) a volunteer serves: paths separated by ``os.pathsep``,
#: each a MODEL_DIR or a folder of MODEL_DIRs.
MODEL_DIRS_ENV = "HUBCAT_MODEL_DIRS"

logger = logging.getLogger("grid.worker")

_MODELS: dict[str, object] = {}
_LOCK = threading.Lock()


def hardware_class() -> str:
    """A coarse hardware class of this CPU: ``avx512``, ``avx2``, ``neon`` or ``generic``."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        flags = ""
    if " avx512f" in flags:
        return "avx512"
    if " avx2" in flags:
        return "avx2"
    if "asimd" in flags or "neon" in flags:
        return "neon"
    return "generic"


#: glibc keeps blocks freed below this size for reuse instead of returning them to the system
#: (``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` of ``mallopt``).
MALLOC_KEEP_BYTES = 256 * 2**20


def keep_freed_memory(limit: int = MALLOC_KEEP_BYTES) -> bool:
    """Let glibc reuse freed tensor memory in this process instead of unmapping it at once.

    A Dask nanny starts its worker with ``MALLOC_TRIM_THRESHOLD_=65536``, and setting that
    variable turns off glibc's adaptive mmap threshold: every tensor over 128 KiB is then a
    fresh ``mmap`` whose pages fault in on first use and go back to the system when it is
    freed. Torch allocates and frees such tensors at every layer, so a training step of the
    ``sky-pairs`` head on 32 tiles takes 6.0 s in a process with that setting and 3.6 s after
    this call (one core; ``python -m benchmarks training``). Raising both thresholds to ``limit``
    restores reuse; a worker's resident memory then holds up to ``limit`` bytes it no longer
    uses. A glibc that refuses ``limit`` for the mmap threshold (older ones cap it at 32 MiB on
    64-bit machines) gets 32 MiB.

    Returns
    -------
    bool
        Whether the thresholds were set (False where the C library is not glibc).
    """
    import ctypes
    import ctypes.util

    m_trim_threshold, m_mmap_threshold = -1, -3
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(m_mmap_threshold, int(limit)) == 1 or mallopt(m_mmap_threshold, 32 * 2**20) == 1
    ok = mallopt(m_trim_threshold, int(limit)) == 1 and ok
    if not ok:
        logging.getLogger(__name__).warning(
            "glibc refused the malloc thresholds: torch may run slower in this Dask worker"
        )
    return ok


def set_torch_threads(n: int) -> None:
    """Use ``n`` intra-op threads in torch (once per process)."""
    import torch

    n = max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def installed_model_dirs() -> dict[str, str]:
    """The tuned models listed in ``$HUBCAT_MODEL_DIRS``: weights sha256 (as recorded) -> folder."""
    import os
    from pathlib import Path

    from embeddings import is_model_dir, read_model_config
    from embeddings.errors import EmbeddingError

    found: dict[str, str] = {}
    for entry in filter(None, os.environ.get(MODEL_DIRS_ENV, "").split(os.pathsep)):
        path = Path(entry).expanduser()
        candidates = [path] if is_model_dir(path) else sorted(path.glob("*/"))
        for folder in candidates:
            if is_model_dir(folder):
                try:
                    found[str(read_model_config(folder)["weights_sha256"])] = str(folder)
                except EmbeddingError as exc:  # a damaged folder is skipped, not fatal
                    logger.warning("tuned model %s is not usable: %s", folder, exc)
    return found


def resolve_model_dir(name: str | None, weights_sha256: str) -> str | None:
    """The model to load for the operator's ``name``: itself, unless it is a tuned model folder
    (a path) absent here, which is then found by its weights sha256 among
    :func:`installed_model_dirs` (the folder a volunteer installed)."""
    import os

    if not name or os.path.exists(name) or not (os.sep in name or name.startswith(".")):
        return name
    local = installed_model_dirs().get(weights_sha256)
    if local is None:
        msg = (
            f"the operator's model {name} (weights sha256 {weights_sha256[:16]}...) is a tuned "
            f"model folder that is not installed here: copy it and list it in ${MODEL_DIRS_ENV}"
        )
        raise ModelVerificationError(msg)
    return local


def worker_model(
    name: str | None,
    weights: str | None,
    weights_sha256: str,
    digest: str,
    threads: int,
    numerical_class: str | None = None,
):
    """The model for this process, loaded once and verified before use.

    Parameters
    ----------
    name, weights : str or None
        As for :func:`embeddings.load_model`.
    weights_sha256 : str
        sha256 the operator expects of the weights file (hex).
    digest : str
        :attr:`embeddings.EmbeddingModel.digest` the operator expects.
    threads : int
        torch intra-op threads.
    numerical_class : str or None
        The runtime and precision the replica must be computed with (its unit's class, see
        :func:`embeddings.numerical_class`); ``None``: this process's default.

    Raises
    ------
    ModelVerificationError
        If the loaded model's weights or digest differ from the operator's, or this machine
        cannot compute the class asked for.
    """
    from embeddings import EmbedConfig, config_for_class, load_model, verify_weights
    from embeddings.errors import CorruptWeightsError, EmbeddingError

    with _LOCK:
        model = _MODELS.get((digest, numerical_class))
        if model is None:
            set_torch_threads(threads)
            try:
                config = (
                    config_for_class(numerical_class, threads=threads)
                    if numerical_class
                    else EmbedConfig(threads=threads)
                )
            except EmbeddingError as exc:
                raise ModelVerificationError(str(exc)) from exc
            model = load_model(resolve_model_dir(name, weights_sha256), weights, config=config)
            try:
                verify_weights(model, weights_sha256)
            except CorruptWeightsError as exc:
                raise ModelVerificationError(str(exc)) from exc
            if model.digest != digest:
                msg = (
                    f"model {model.name} on this worker has digest {model.digest}, the operator "
                    f"expects {digest}: install the same hubcat, timm and weights versions"
                )
                raise ModelVerificationError(msg)
            _MODELS[(digest, numerical_class)] = model
        return model


class ModelPlugin(WorkerPlugin):
    """Worker plugin that loads and verifies the model once per worker process.

    Parameters
    ----------
    name, weights : str or None
        As for :func:`embeddings.load_model`.
    weights_sha256, digest : str
        What the operator expects (see :func:`worker_model`).
    threads : int
        torch intra-op threads on the worker.
    numerical_class : str or None
        The class to load it in (``"torch-fp32"`` for training units); ``None``: the default.
    """

    idempotent = False

    def __init__(
        self,
        name,
        weights,
        weights_sha256: str,
        digest: str,
        threads: int,
        numerical_class: str | None = None,
    ) -> None:
        self.name = "hubcat-model"
        self.args = (name, weights, weights_sha256, digest, threads, numerical_class)

    def setup(self, worker) -> None:
        keep_freed_memory()
        set_torch_threads(self.args[4])
        worker_model(*self.args)


def worker_threads_and_ca() -> tuple[int, str | None]:
    """The threads of the Dask worker running this task and its TLS CA file.

    Returns
    -------
    threads : int
        The worker's threads (1 outside a worker: tests, benchmarks).
    ca_file : str or None
        The CA file of the worker's TLS security, if any.
    """
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # called outside a worker (tests, benchmarks)
        return 1, None
    return int(worker.state.nthreads), getattr(worker.security, "tls_ca_file", None)
