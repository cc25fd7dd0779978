"""The volunteer's preload: ``dask worker ... --preload grid.volunteer``.

Importing this module (Dask imports a preload when the worker is created, before it listens or
connects) installs the grid's wire in the worker's process with the *volunteer* policy
(:mod:`grid._wire`):

* the worker accepts connections from the scheduler only: any other peer (another volunteer,
  a client, a peer without a certificate) is disconnected right after the TLS handshake,
  before a single frame is read; units are independent, so volunteers never talk to each other;
* it dials only a peer that presents the *scheduler* certificate of the grid's CA, so a
  volunteer's certificate cannot pose as the scheduler.

At start-up :func:`dask_setup` then makes sure the worker's listeners are the gated ones, sets
torch's thread count to ``--nthreads`` (the nanny, when there is one, sets
``OMP_NUM_THREADS=1``) and records the machine's hardware class as a worker resource
(``hw-avx512``, ``hw-avx2``, ...) and the numerical classes it can compute (``class-openvino-fp32``,
``class-torch-fp32``, ...: :func:`volunteer_classes`), so that the replicas of a unit are all
computed within one class. The model is loaded once per process, and its weights'
sha256 verified, on the first task (:func:`grid._worker.worker_model`). A volunteer that serves
a tuned model (``hubcat tune``) installs its folder and lists it in ``$HUBCAT_MODEL_DIRS``
(paths separated by ``os.pathsep``, each a MODEL_DIR or a folder of them): the operator names
it by its own path, the worker finds the folder with the same weights sha256, and loads it
only if the weights file still hashes to that value.

Import it only in a volunteer's worker process: it fixes the process's role.
"""

from __future__ import annotations

import logging

from grid._wire import WirePolicy, gate_listeners, install_wire
from grid._worker import (
    hardware_class,
    installed_model_dirs,
    keep_freed_memory,
    set_torch_threads,
)

__all__ = ["dask_setup"]

logger = logging.getLogger("grid.volunteer")

install_wire(WirePolicy("volunteer"))


def dask_setup(worker) -> None:
    """Preload hook of ``dask worker --preload grid.volunteer``."""
    gate_listeners(worker)
    nthreads = getattr(worker.state, "nthreads", 1)
    keep_freed_memory()
    set_torch_threads(nthreads)
    hw = f"hw-{hardware_class()}"
    resources = {hw: 1.0, **volunteer_classes()}
    for name, amount in resources.items():
        worker.state.total_resources[name] = amount
        worker.state.available_resources[name] = amount
    tuned = installed_model_dirs()
    if tuned:
        logger.info("tuned models offered: %s", ", ".join(sorted(tuned.values())))
    logger.info(
        "hubcat volunteer %s ready (%d threads, %s, classes %s)",
        worker.name,
        nthreads,
        hw,
        ", ".join(k.removeprefix("class-") for k in resources if k.startswith("class-")),
    )


def volunteer_classes() -> dict[str, float]:
    """The numerical classes this worker offers, as worker resources (``class-<name>``).

    Every class this machine computes natively with the runtimes installed
    (:func:`embeddings.class_resources`), or only those listed in ``HUBCAT_VOLUNTEER_CLASSES``
    (comma-separated, e.g. ``torch-fp32``) when the volunteer limits what it runs.
    """
    import os

    from embeddings import class_resources

    offered = class_resources()
    chosen = [c for c in os.environ.get("HUBCAT_VOLUNTEER_CLASSES", "").split(",") if c]
    if chosen:
        offered = {k: v for k, v in offered.items() if k.removeprefix("class-") in chosen}
    return offered
