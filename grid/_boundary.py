"""The scheduler's side of the volunteer boundary: what a volunteer may say, and for whom.

Every message a volunteer sends reaches the scheduler through :mod:`grid._wire`, already decoded
inertly (nothing unpickled), and passes :meth:`VolunteerFilter.__call__` *before* Dask
dispatches it. A volunteer speaks only for itself:

* **RPC** (a dict with an ``op``): only :data:`VOLUNTEER_OPS`, each with its arguments checked
  or rewritten: ``register-worker`` only when the name equals the certificate CN and the CN is
  enrolled, current, unrevoked and unexpired; ``heartbeat_worker``, ``unregister`` and
  ``retire_workers`` only for the volunteer's own worker (and nothing else: pickled
  ``retire_workers`` keys, heartbeat extensions are dropped). Anything else is answered with a
  refusal that says why, and the handler never runs.
* **Stream** (the batched list a registered worker sends): only :data:`VOLUNTEER_STREAM_OPS`;
  the ``worker`` of every message is overwritten with the address the connection registered,
  so a worker cannot report for another; a finished task loses its pickled ``type``; a failed
  task's exception becomes a plain-text :class:`grid.errors.RemoteTaskError` built here.
  ``add-keys``, ``log-event`` (which Dask forwards to clients), ``missing-data`` and
  ``request-refresh-who-has`` are dropped.
* A message holding a pickled or serialised part anywhere else is refused or dropped whole.

:class:`AttributionPlugin` records, from the scheduler's own state, which worker computed each
task (the worker it was *processing on* when it reached memory), which the operator reads with
the operator-only ``hubcat_attribution`` handler; :class:`RegisterWatcher` removes a revoked or
expired volunteer's workers within a second of ``hubcat grid revoke``.
"""

from __future__ import annotations

import contextlib
import logging
import time

from distributed.diagnostics.plugin import SchedulerPlugin

from grid._config import GridConfig
from grid._wire import Opaque, contains_opaque

__all__ = [
    "BLOCKED_HANDLERS",
    "OPERATOR_HANDLERS",
    "VOLUNTEER_OPS",
    "VOLUNTEER_STREAM_OPS",
    "AttributionPlugin",
    "RegisterWatcher",
    "VolunteerFilter",
    "scheduler_config",
]

logger = logging.getLogger("grid.gate")

#: Handlers nobody may call on the grid scheduler (``distributed.scheduler.blocked-handlers``).
#: ``gather``/``scatter`` are blocked so that no result bytes ever travel through Dask (an
#: accidental ``future.result()`` fails instead of unpickling a volunteer's bytes).
BLOCKED_HANDLERS: tuple[str, ...] = (
    "feed",
    "run_function",
    "broadcast",
    "proxy",
    "gather",
    "scatter",
    "register_scheduler_plugin",
    "unregister_scheduler_plugin",
    "register_worker_plugin",
    "unregister_worker_plugin",
    "register_nanny_plugin",
    "unregister_nanny_plugin",
    "dump_cluster_state_to_url",
    "get_cluster_state",
    "rebalance",
    "replicate",
)

#: RPC ops a volunteer's certificate may send to the scheduler (arguments checked).
VOLUNTEER_OPS: frozenset[str] = frozenset(
    {"register-worker", "heartbeat_worker", "unregister", "retire_workers", "close"}
)

#: Stream ops a registered volunteer worker may send (``worker`` forced to its own address).
VOLUNTEER_STREAM_OPS: frozenset[str] = frozenset(
    {
        "task-finished",
        "task-erred",
        "release-worker-data",
        "long-running",
        "reschedule",
        "keep-alive",
        "worker-status-change",
    }
)

#: Handlers added to the scheduler for the operator only.
OPERATOR_HANDLERS = ("hubcat_attribution", "hubcat_revoked")

#: Fields of a volunteer's stream messages that are kept (everything else is dropped).
_STREAM_FIELDS = {
    "task-finished": (
        "key",
        "run_id",
        "nbytes",
        "typename",
        "metadata",
        "thread",
        "startstops",
        "stimulus_id",
    ),
    "task-erred": (
        "key",
        "run_id",
        "exception_text",
        "traceback_text",
        "thread",
        "startstops",
        "stimulus_id",
    ),
    "release-worker-data": ("key", "stimulus_id"),
    "long-running": ("key", "run_id", "compute_duration", "stimulus_id"),
    "reschedule": ("key", "stimulus_id"),
    "keep-alive": (),
    "worker-status-change": ("status", "stimulus_id"),
}


def scheduler_config(config: GridConfig | None = None) -> dict:
    """The ``dask.config`` settings of a grid scheduler (flat keys).

    Parameters
    ----------
    config : GridConfig or None
        Gives the churn settings (:meth:`GridConfig.scheduler_settings`); default ``GridConfig()``.

    Returns
    -------
    dict
    """
    return {
        "distributed.comm.require-encryption": True,
        "distributed.scheduler.blocked-handlers": list(BLOCKED_HANDLERS),
        **(config or GridConfig()).scheduler_settings(),
    }


class VolunteerFilter:
    """The message filter of a grid scheduler (see the module docstring).

    Parameters
    ----------
    scheduler : distributed.Scheduler
    admission : callable
        ``admission(peer, name) -> reason or None`` (:meth:`grid.GridAuthority.check_volunteer`
        or the scheduler folder's equivalent).
    """

    def __init__(self, scheduler, admission) -> None:
        self.scheduler = scheduler
        self.admission = admission
        self.refusals = 0

    # -- helpers -------------------------------------------------------------------------
    def own_workers(self, cn: str) -> set[str]:
        return {a for a, ws in self.scheduler.workers.items() if str(ws.name) == cn}

    def refuse(self, comm, op: str, reason: str, *, reply: bool = True) -> dict:
        who = comm.hubcat_peer.cn if comm.hubcat_peer else comm.peer_address
        self.refusals += 1
        logger.warning("gate: refused %r from %s: %s", str(op)[:80], who, reason)
        return {
            "op": "hubcat-refused",
            "refused_op": str(op)[:80],
            "reason": reason,
            "reply": reply,
        }

    # -- the filter ----------------------------------------------------------------------
    async def __call__(self, comm, msg):
        if isinstance(msg, (list, tuple)):
            return [m for m in (self.stream(comm, m) for m in msg) if m is not None]
        if not isinstance(msg, dict):
            return self.refuse(comm, "?", "a message must be a dict")
        if "op" not in msg:  # the connection handshake, or garbage
            if not getattr(comm, "hubcat_handshaken", False) and not contains_opaque(msg):
                comm.hubcat_handshaken = True
                return msg
            return self.refuse(comm, "?", "a message without an op")
        comm.hubcat_handshaken = True
        return self.rpc(comm, msg)

    def rpc(self, comm, msg: dict) -> dict:
        op = msg.get("op")
        reply = bool(msg.get("reply", True)) if not isinstance(msg.get("reply"), Opaque) else True
        cn = comm.hubcat_peer.cn
        if not isinstance(op, str) or op not in VOLUNTEER_OPS:
            return self.refuse(
                comm, str(op), f"volunteer certificates may not call {op!r}", reply=reply
            )
        if contains_opaque(msg):
            return self.refuse(
                comm,
                op,
                "pickled or serialised parts are not accepted from volunteers",
                reply=reply,
            )
        if op == "close":
            return msg
        if op == "register-worker":
            reason = self.admission(comm.hubcat_peer, msg.get("name"))
            if reason:  # Dask's own handler answers a registration itself: answer it here
                return self.refuse(comm, op, reason, reply=True)
            if not isinstance(msg.get("address"), str):
                return self.refuse(comm, op, "a worker address must be a string", reply=reply)
            msg["nanny"] = None  # the scheduler never dials a volunteer's nanny
            msg["extra"] = {}
            comm.hubcat_worker = msg["address"]
            return msg
        own = self.own_workers(cn)
        if op == "heartbeat_worker":
            if msg.get("address") not in own:
                return self.refuse(
                    comm, op, "a heartbeat may only name the volunteer's own worker", reply=reply
                )
            msg.pop("extensions", None)
            return msg
        if op == "unregister":
            if msg.get("address") not in own:
                return self.refuse(
                    comm, op, "'unregister' may only name the volunteer's own workers", reply=reply
                )
            return {k: msg[k] for k in ("op", "address", "stimulus_id", "reply") if k in msg}
        # retire_workers
        workers = msg.get("workers")
        if not isinstance(workers, (list, tuple)) or not workers or not set(workers) <= own:
            return self.refuse(
                comm, op, "'retire_workers' may only name the volunteer's own workers", reply=reply
            )
        keep = {
            k: msg[k]
            for k in ("op", "workers", "close_workers", "remove", "stimulus_id", "reply")
            if k in msg
        }
        keep["workers"] = list(workers)
        return keep

    def stream(self, comm, msg):
        if not isinstance(msg, dict):
            return None
        op = msg.get("op")
        who = comm.hubcat_peer.cn if comm.hubcat_peer else comm.peer_address
        if comm.hubcat_worker is None or comm.hubcat_worker not in self.scheduler.workers:
            logger.warning("gate: dropped a stream message from %s before it registered", who)
            return None
        if op not in VOLUNTEER_STREAM_OPS:
            logger.warning("gate: dropped stream op %r from %s", str(op)[:80], who)
            return None
        out = {"op": op}
        for name in _STREAM_FIELDS[op]:
            if name in msg:
                out[name] = msg[name]
        if contains_opaque(out):
            logger.warning("gate: dropped %r from %s: it holds a pickled part", op, who)
            return None
        if op in ("task-finished", "task-erred", "long-running", "reschedule"):
            ts = self.scheduler.tasks.get(out.get("key"))
            on = getattr(getattr(ts, "processing_on", None), "address", None)
            wrong = ts is not None and ts.state == "processing" and on != comm.hubcat_worker
            if wrong or (ts is not None and ts.state == "memory"):
                logger.warning("gate: dropped %r from %s for a task it was not given", op, who)
                return None
        out["worker"] = comm.hubcat_worker  # a worker speaks for itself only
        if op == "task-finished":
            out["type"] = None
            out.setdefault("metadata", {})
            out.setdefault("nbytes", 0)
            out.setdefault("typename", "")
        elif op == "task-erred":
            from distributed.protocol import to_serialize

            from grid.errors import RemoteTaskError

            text = str(out.get("exception_text") or "task failed")[:2000]
            out["exception"] = to_serialize(RemoteTaskError(f"task failed on {who}: {text}"))
            out["traceback"] = None
            out["exception_text"] = text
            out["traceback_text"] = str(out.get("traceback_text") or "")[:4000]
        return out


class AttributionPlugin(SchedulerPlugin):
    """Records which worker computed each task, from the scheduler's own state.

    A task is attributed to the worker it was processing on when it moved to memory: the
    scheduler accepts that transition only from that worker's own stream, whose ``worker``
    field :class:`VolunteerFilter` has fixed, so no message can name another worker.
    """

    name = "hubcat-attribution"

    def __init__(self, scheduler, limit: int = 1_000_000) -> None:
        self.scheduler = scheduler
        self.limit = limit
        self.done: dict[str, str] = {}  # key -> worker name

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if start != "processing" or finish != "memory":
            return
        ts = self.scheduler.tasks.get(key)
        ws = None
        if ts is not None and ts.who_has:
            ws = next(iter(ts.who_has))
        address = kwargs.get("worker")
        if address in self.scheduler.workers:
            ws = self.scheduler.workers[address]
        if ws is None:
            return
        if len(self.done) >= self.limit:
            self.done.pop(next(iter(self.done)))
        self.done[str(key)] = str(ws.name)

    def forget(self, keys) -> None:
        for key in keys:
            self.done.pop(str(key), None)


class RegisterWatcher:
    """Re-reads the register every ``interval`` seconds and removes workers no longer admitted.

    Parameters
    ----------
    scheduler : distributed.Scheduler
    admitted : callable
        ``admitted(name) -> reason or None`` for a worker already registered.
    interval : float
        Seconds between checks.
    """

    def __init__(self, scheduler, admitted, interval: float = 1.0) -> None:
        from tornado.ioloop import PeriodicCallback

        self.scheduler = scheduler
        self.admitted = admitted
        self.removed: dict[str, str] = {}  # worker name -> reason
        self.callback = PeriodicCallback(self.check, interval * 1000)
        self.callback.start()

    async def check(self) -> None:
        for address, ws in list(self.scheduler.workers.items()):
            reason = self.admitted(str(ws.name))
            if reason is None:
                continue
            self.removed[str(ws.name)] = reason
            logger.warning("gate: removing worker %s (%s): %s", ws.name, address, reason)
            stream = self.scheduler.stream_comms.get(address)
            if stream is not None:  # the worker logs why it stops
                with contextlib.suppress(Exception):
                    stream.send({"op": "close", "reason": f"hubcat gate: {reason}"})
            with contextlib.suppress(Exception):
                await self.scheduler.remove_worker(
                    address, stimulus_id=f"hubcat-revoked-{time.time()}", close=True
                )


def install_operator_handlers(scheduler, attribution: AttributionPlugin, watcher) -> None:
    """Add the operator-only handlers (volunteers cannot reach them: see :data:`VOLUNTEER_OPS`)."""

    def hubcat_attribution(keys=(), forget=False):
        out = {str(k): attribution.done.get(str(k)) for k in keys}
        if forget:
            attribution.forget(keys)
        return out

    def hubcat_revoked():
        return dict(watcher.removed)

    def hubcat_refused(comm, refused_op="?", reason="refused", **_):
        return {
            "status": "error",
            "message": f"hubcat gate refused {refused_op!r}: {reason}",
            "time": time.time(),  # a refused worker's registration reads it before the status
        }

    scheduler.handlers["hubcat_attribution"] = hubcat_attribution
    scheduler.handlers["hubcat_revoked"] = hubcat_revoked
    scheduler.handlers["hubcat-refused"] = hubcat_refused
