"""Worker side of the grid: the ``--preload grid.volunteer`` module and the model cache.

A volunteer runs Dask's own ``dask worker`` with ``--preload grid.volunteer``. At start-up the
preload

* sets torch's thread count to the worker's ``--nthreads`` (the nanny, when there is one, sets
  ``OMP_NUM_THREADS=1``),
* records the machine's hardware class as a worker resource (``hw-avx512``, ``hw-avx2``, ...),
* closes the worker's own handlers to other volunteers: a peer presenting a volunteer
  certificate may only fetch data (``get_data``); everything else (``run``, ``plugin-add``, ...)
  is reserved for the scheduler and the operator,
* and, on the first task, loads the model once per process and verifies its weights' sha256
  against the operator's before any tile is embedded (:func:`worker_model`).

:class:`ModelPlugin` does the same for the local cluster that :func:`grid.run_units` starts.
"""

from __future__ import annotations

import logging
import threading

from distributed.diagnostics.plugin import WorkerPlugin

from grid.errors import ModelVerificationError

__all__ = ["ModelPlugin", "dask_setup", "hardware_class", "worker_model"]

logger = logging.getLogger("grid.volunteer")

_MODELS: dict[str, object] = {}
_LOCK = threading.Lock()

#: Worker handlers another volunteer may call on this worker (peer-to-peer data transfer).
PEER_HANDLERS = frozenset({"get_data", "identity"})


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


def set_torch_threads(n: int) -> None:
    """Use ``n`` intra-op threads in torch (once per process)."""
    import torch

    n = max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def worker_model(
    name: str | None, weights: str | None, weights_sha256: str, digest: str, threads: int
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

    Raises
    ------
    ModelVerificationError
        If the loaded model's weights or digest differ from the operator's.
    """
    from embeddings import EmbedConfig, load_model, verify_weights
    from embeddings.errors import CorruptWeightsError

    with _LOCK:
        model = _MODELS.get(digest)
        if model is None:
            set_torch_threads(threads)
            model = load_model(name, weights, config=EmbedConfig(threads=threads))
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
            _MODELS[digest] = model
        return model


def _gate_worker_handlers(worker) -> None:
    from grid._pki import peer_identity

    def wrap(op, handler):
        from distributed.core import _expects_comm

        takes_comm = _expects_comm(handler)

        async def gated(comm, **msg):
            try:
                ident = peer_identity(comm.extra_info.get("peercert"))
            except Exception:
                ident = None
            if ident is not None and ident.role == "volunteer" and op not in PEER_HANDLERS:
                logger.warning("refused %r from volunteer %s", op, ident.cn)
                return {"status": "error", "message": f"volunteers may not call {op!r} here"}
            result = handler(comm, **msg) if takes_comm else handler(**msg)
            if hasattr(result, "__await__"):
                result = await result
            return result

        gated.__name__ = getattr(handler, "__name__", op)
        return gated

    for op, handler in list(worker.handlers.items()):
        worker.handlers[op] = wrap(op, handler)


def dask_setup(worker) -> None:
    """Preload hook of ``dask worker --preload grid.volunteer``."""
    nthreads = getattr(worker.state, "nthreads", 1)
    set_torch_threads(nthreads)
    hw = f"hw-{hardware_class()}"
    worker.state.total_resources[hw] = 1
    worker.state.available_resources[hw] = 1
    _gate_worker_handlers(worker)
    logger.info("hubcat volunteer %s ready (%d threads, %s)", worker.name, nthreads, hw)


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
    """

    idempotent = False

    def __init__(self, name, weights, weights_sha256: str, digest: str, threads: int) -> None:
        self.name = "hubcat-model"
        self.args = (name, weights, weights_sha256, digest, threads)

    def setup(self, worker) -> None:
        set_torch_threads(self.args[-1])
        worker_model(*self.args)
