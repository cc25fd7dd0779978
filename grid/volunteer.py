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
(``hw-avx512``, ``hw-avx2``, ...). The model is loaded once per process, and its weights'
sha256 verified, on the first task (:func:`grid._worker.worker_model`).

Import it only in a volunteer's worker process: it fixes the process's role.
"""

from __future__ import annotations

import logging

from grid._wire import WirePolicy, gate_listeners, install_wire
from grid._worker import hardware_class, set_torch_threads

__all__ = ["dask_setup"]

logger = logging.getLogger("grid.volunteer")

install_wire(WirePolicy("volunteer"))


def dask_setup(worker) -> None:
    """Preload hook of ``dask worker --preload grid.volunteer``."""
    gate_listeners(worker)
    nthreads = getattr(worker.state, "nthreads", 1)
    set_torch_threads(nthreads)
    hw = f"hw-{hardware_class()}"
    worker.state.total_resources[hw] = 1
    worker.state.available_resources[hw] = 1
    logger.info("hubcat volunteer %s ready (%d threads, %s)", worker.name, nthreads, hw)
