"""Configuration of a grid run: one dataclass, recorded with every run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from grid.errors import GridConfigError

__all__ = ["GridConfig"]

TRANSFERS = ("auto", "direct", "presigned", "endpoint")


@dataclass(frozen=True)
class GridConfig:
    """Parameters of a grid run (redundancy, validation, churn, credit, workers).

    Parameters
    ----------
    min_quorum : int or None
        Number of agreeing replicas, on distinct volunteers, that accept a unit. ``None`` means
        1 on a ``LocalCluster`` that :func:`grid.run_units` starts itself (trusted local
        processes) and 2 on any other cluster.
    max_replicas : int
        Cap on replicas of one unit; a unit still without a quorum is marked ``disputed``.
    dispute_margin : int
        Extra agreeing volunteers a unit needs once its replicas have disagreed (quorum 2 and
        margin 1: three must agree). It keeps two colluders who meet an honest volunteer from
        outvoting it; with fewer honest volunteers than ``quorum + dispute_margin`` such a unit
        ends ``disputed`` and is retried by the next run. 0 restores plain BOINC quorums.
    min_cosine : float
        Two replicas agree when every tile's vectors have cosine similarity >= this value.
        The default is calibrated on honest runs (``benchmarks/grid.py`` measures
        ``1 - cos`` between machines and thread counts; it is below 1e-6) with a safety margin.
    trust_after : int
        Consecutive valid results after which a volunteer is trusted (adaptive replication).
    spot_check_rate : float
        Probability that a unit given to a trusted volunteer is replicated anyway.
    canary_rate : float
        Probability that a trusted volunteer is sent an already-accepted unit (a known answer).
    replica_timeout : float
        Seconds a replica restricted to other volunteers may wait before it is re-planned, so a
        restriction never hangs (s).
    idle_timeout : float
        Seconds without any worker or progress after which :func:`grid.run_units` stops
        cleanly, leaving pending units for a later run (s).
    n_workers : int
        Worker processes of the local cluster started when no client is given.
    threads_per_worker : int
        Threads per local worker process (also torch's intra-op threads on the worker).
    in_process : bool
        Run the local cluster's workers as threads of this process instead of worker
        processes (``hubcat embed --in-process``): the same units, validation and records, with
        no process to start.
    allowed_failures : int
        ``distributed.scheduler.allowed-failures``: worker deaths a task survives.
    worker_ttl : str
        ``distributed.scheduler.worker-ttl``: a silent worker is removed after this time.
    max_in_flight : int or None
        Replicas of new units kept in flight at once (``None``: twice the workers' threads, at
        least 4). Small windows let trust earned during a run apply to later units.
    flop_per_forward : float
        FLOP of one forward pass of the model on one 224x224 image, for credit (FLOP).
    seed : int
        Seed of the random choices (spot checks, canaries).
    presigned_urls : bool
        Shorthand for ``transfer="presigned"`` (kept for older configurations).
    url_margin : float
        Capability URLs expire ``replica_timeout + url_margin`` seconds after signing (s).
    transfer : str
        How workers reach tiles and results. ``"direct"``: they open the stores (only for the
        operator's own processes); ``"presigned"``: pre-signed S3 URLs per replica (tile store
        under ``s3://``, see :mod:`grid._presign`); ``"endpoint"``: the operator's
        :class:`grid._endpoint.ReplicaEndpoint` serves per-replica capabilities (folders);
        ``"auto"`` (default): direct on the local cluster :func:`grid.run_units` starts,
        otherwise presigned for S3 and endpoint for folders, so that no volunteer can read,
        list or write anything but its own replica.
    endpoint_host : str
        Interface the replica endpoint listens on (volunteers must reach it).
    endpoint_port : int
        Port of the replica endpoint (0: any free port).
    endpoint_advertise : str or None
        Host name volunteers use to reach the endpoint (default: ``endpoint_host``).
    """

    min_quorum: int | None = None
    max_replicas: int = 5
    dispute_margin: int = 1
    min_cosine: float = 0.9999
    trust_after: int = 10
    spot_check_rate: float = 0.1
    canary_rate: float = 0.02
    replica_timeout: float = 120.0
    idle_timeout: float = 600.0
    n_workers: int = 2
    threads_per_worker: int = 1
    in_process: bool = False
    allowed_failures: int = 10
    worker_ttl: str = "60s"
    max_in_flight: int | None = None
    flop_per_forward: float = 0.77e9
    seed: int = 0
    presigned_urls: bool = False
    url_margin: float = 600.0
    transfer: str = "auto"
    endpoint_host: str = "127.0.0.1"
    endpoint_port: int = 0
    endpoint_advertise: str | None = None

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> None:
            msg = f"GridConfig.{name}={getattr(self, name)!r} is invalid: expected {expected}"
            raise GridConfigError(msg)

        if self.min_quorum is not None and not 1 <= self.min_quorum <= self.max_replicas:
            bad("min_quorum", f"None or an integer in [1, max_replicas={self.max_replicas}]")
        if self.dispute_margin < 0:
            bad("dispute_margin", "an integer >= 0")
        if self.max_replicas < 1:
            bad("max_replicas", "an integer >= 1")
        if not 0.0 < self.min_cosine <= 1.0:
            bad("min_cosine", "a cosine in (0, 1]")
        for name in ("spot_check_rate", "canary_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(name, "a probability in [0, 1]")
        for name in ("trust_after", "n_workers", "threads_per_worker", "allowed_failures"):
            if getattr(self, name) < (0 if name == "trust_after" else 1):
                bad(name, "a positive integer")
        if self.transfer not in TRANSFERS:
            bad("transfer", f"one of {', '.join(repr(t) for t in TRANSFERS)}")
        if not 0 <= self.endpoint_port < 65536:
            bad("endpoint_port", "a port number (0 for any free port)")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            bad("max_in_flight", "None or an integer >= 1")
        for name in ("replica_timeout", "idle_timeout", "flop_per_forward", "url_margin"):
            if getattr(self, name) <= 0:
                bad(name, "a positive number")

    @property
    def url_expires(self) -> int:
        """Lifetime of a pre-signed URL: ``replica_timeout + url_margin``, at most 7 days (s)."""
        return max(1, min(int(self.replica_timeout + self.url_margin), 7 * 24 * 3600))

    def transfer_mode(self, *, local: bool, remote: bool) -> str:
        """The transfer used by a run (see ``transfer``); ``remote``: the tile store is on S3.

        Parameters
        ----------
        local : bool
            The run uses the local cluster :func:`grid.run_units` starts itself.
        remote : bool
            The tile store is under ``s3://``.

        Returns
        -------
        str
            ``"direct"``, ``"presigned"`` or ``"endpoint"``.
        """
        if self.presigned_urls:
            return "presigned"
        if self.transfer != "auto":
            return self.transfer
        if local:
            return "direct"
        return "presigned" if remote else "endpoint"

    def quorum(self, local: bool) -> int:
        """The effective minimum quorum (see ``min_quorum``).

        Parameters
        ----------
        local : bool
            The run uses the local cluster :func:`grid.run_units` starts itself.

        Returns
        -------
        int
            ``min_quorum`` if set, else 1 locally and 2 on any other cluster.
        """
        if self.min_quorum is not None:
            return self.min_quorum
        return 1 if local else 2

    def as_dict(self) -> dict:
        """All parameters as a JSON-serialisable dict.

        Returns
        -------
        dict
        """
        return asdict(self)

    def digest(self) -> str:
        """sha256 of the parameters that change which vectors are accepted (hex).

        Returns
        -------
        str
            64 hex digits over ``min_quorum``, ``max_replicas``, ``min_cosine`` and
            ``dispute_margin``.
        """
        keys = ("min_quorum", "max_replicas", "min_cosine", "dispute_margin")
        text = json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def scheduler_settings(self) -> dict:
        """The ``dask.config`` churn settings of a scheduler running this grid (flat keys).

        Both the local cluster of :func:`grid.run_units` and ``hubcat grid scheduler`` take them
        from here, so the grid's defaults are written once.

        Returns
        -------
        dict
            ``distributed.scheduler.allowed-failures`` and ``distributed.scheduler.worker-ttl``.
        """
        return {
            "distributed.scheduler.allowed-failures": self.allowed_failures,
            "distributed.scheduler.worker-ttl": self.worker_ttl,
        }
