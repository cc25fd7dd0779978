"""Run embedding work units on Dask workers that nobody has to trust.

>>> from grid import run_units, GridConfig
>>> report = run_units(tile_store)            # doctest: +SKIP  (a LocalCluster by default)

On the volunteer grid (``hubcat grid init|enroll|scheduler``) the scheduler runs the
:mod:`grid.gate` preload and volunteers run ``dask worker ... --preload grid.volunteer``; both
put the boundary where Dask reads frames (:mod:`grid._wire`): a volunteer's bytes are never
unpickled, and a volunteer speaks only for itself (:mod:`grid._boundary`). Every unit's vectors
reach the operator through a per-replica capability, are validated in the operator's process,
compared across distinct volunteers, accepted into the :class:`embeddings.EmbeddingStore` and
credited in a signed, append-only ledger. :func:`run_training` runs validated *training*
units (weight deltas, combined by an outer step) the same way. See ``docs/grid.md``.
"""

from __future__ import annotations

from grid._config import GridConfig
from grid._deltas import DeltaTolerance, check_delta_bytes, compare_deltas
from grid._identity import Enrollment, PeerIdentity, peer_identity
from grid._ledger import (
    CreditLedger,
    LedgerReport,
    VolunteerSummary,
    cobblestones,
    default_ledger_key,
    load_ledger_key,
)
from grid._pki import GridAuthority
from grid._procs import scheduler_argv, scheduler_environment
from grid._records import GridArea, UnitRecords
from grid._results import ResultStore, agree, check_replica, cosines
from grid._run import GridReport, run_units
from grid._selftest import selftest
from grid._status import grid_status, render_status
from grid._training import TrainingConfig, TrainingReport, run_training
from grid.errors import (
    AdmissionError,
    EnrollmentError,
    GridConfigError,
    GridError,
    InvalidResultError,
    ModelVerificationError,
    RemoteTaskError,
    TrainingError,
)

__all__ = [
    "AdmissionError",
    "CreditLedger",
    "DeltaTolerance",
    "Enrollment",
    "EnrollmentError",
    "GridArea",
    "GridAuthority",
    "GridConfig",
    "GridConfigError",
    "GridError",
    "GridReport",
    "InvalidResultError",
    "LedgerReport",
    "ModelVerificationError",
    "PeerIdentity",
    "RemoteTaskError",
    "ResultStore",
    "TrainingConfig",
    "TrainingError",
    "TrainingReport",
    "UnitRecords",
    "VolunteerSummary",
    "agree",
    "check_delta_bytes",
    "check_replica",
    "cobblestones",
    "compare_deltas",
    "cosines",
    "default_ledger_key",
    "grid_status",
    "load_ledger_key",
    "peer_identity",
    "render_status",
    "run_training",
    "run_units",
    "scheduler_argv",
    "scheduler_environment",
    "selftest",
]
