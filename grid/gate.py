"""Scheduler preload: the gate that admits enrolled volunteers and the operator only.

Dask has no authorization layer: every holder of a certificate from the grid's CA could call
any scheduler handler, and a tampered worker can make the client unpickle arbitrary bytes (a
failed task's exception, the ``type`` of a finished task). This module closes both, on the
scheduler, before any message reaches a client:

* a peer that presents the **operator** certificate may call every handler that is not in
  ``distributed.scheduler.blocked-handlers`` (see :data:`BLOCKED_HANDLERS`);
* a peer that presents a **volunteer** certificate may call only the handlers a worker needs
  (:data:`VOLUNTEER_HANDLERS`), and registers as a worker only if its ``--name`` equals its
  certificate CN, the CN is enrolled with that very certificate, not revoked and not expired;
  the handlers that name a worker (``unregister``, ``retire_workers``, ``set_resources``) may
  only name the volunteer's own workers;
* a worker's ``task-finished`` message loses its pickled ``type`` and its ``task-erred`` message
  has the pickled exception and traceback replaced by a plain-text
  :class:`grid.errors.RemoteTaskError`, so nothing a volunteer sends is ever unpickled by the
  operator.

Use it with ``dask scheduler --preload grid.gate`` and ``HUBCAT_GRID_DIR`` set to the grid
directory (``hubcat grid scheduler`` does all of this).
"""

from __future__ import annotations

import logging
import os

from grid._pki import GridAuthority, PeerIdentity, peer_identity

__all__ = [
    "BLOCKED_HANDLERS",
    "VOLUNTEER_HANDLERS",
    "dask_setup",
    "install_gate",
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

#: The only handlers a volunteer's certificate may call.
VOLUNTEER_HANDLERS: frozenset[str] = frozenset(
    {
        "register-worker",
        "heartbeat_worker",
        "unregister",
        "retire_workers",
        "set_resources",
        "who_has",
        "log_event",
        "identity",
        "echo",
        "versions",
    }
)


def scheduler_config(*, allowed_failures: int = 10, worker_ttl: str = "60s") -> dict:
    """The ``dask.config`` settings of a grid scheduler (flat keys)."""
    return {
        "distributed.comm.require-encryption": True,
        "distributed.scheduler.blocked-handlers": list(BLOCKED_HANDLERS),
        "distributed.scheduler.allowed-failures": allowed_failures,
        "distributed.scheduler.worker-ttl": worker_ttl,
    }


def _identity(comm) -> PeerIdentity | None:
    try:
        info = comm.extra_info
    except Exception:
        return None
    return peer_identity(info.get("peercert"))


def _own_workers(scheduler, cn: str) -> set[str]:
    return {addr for addr, ws in scheduler.workers.items() if str(ws.name) == cn}


def install_gate(scheduler, authority: GridAuthority) -> None:
    """Wrap the handlers of ``scheduler`` (a :class:`distributed.Scheduler`) with the gate.

    Parameters
    ----------
    scheduler : distributed.Scheduler
    authority : GridAuthority
        The grid directory whose register lists the enrolled volunteers.
    """
    blocked = set(scheduler.blocked_handlers) | set(BLOCKED_HANDLERS)
    scheduler.blocked_handlers = sorted(blocked)

    def deny(comm, op: str, reason: str):
        ident = _identity(comm)
        who = ident.cn if ident else "a peer without certificate"
        logger.warning("gate: refused %r from %s: %s", op, who, reason)
        scheduler.log_event(
            "hubcat-gate", {"action": "refused", "op": op, "peer": who, "reason": reason}
        )

    def wrap(op: str, handler):
        async def gated(comm, **msg):
            ident = _identity(comm)
            if ident is None or ident.role not in ("operator", "volunteer"):
                reason = "no operator or volunteer certificate"
                deny(comm, op, reason)
                return _refusal(op, reason)
            if ident.role == "volunteer":
                if op not in VOLUNTEER_HANDLERS:
                    reason = f"volunteer certificates may not call {op!r}"
                    deny(comm, op, reason)
                    return _refusal(op, reason)
                if op == "register-worker":
                    reason = authority.check_volunteer(ident, msg.get("name"))
                    if reason:
                        deny(comm, op, reason)
                        await comm.write({"status": "error", "message": f"hubcat gate: {reason}"})
                        return None
                elif op in ("unregister", "retire_workers", "set_resources"):
                    named = msg.get("address") or msg.get("worker") or msg.get("workers") or []
                    named = [named] if isinstance(named, str) else list(named)
                    if not named or not set(named) <= _own_workers(scheduler, ident.cn):
                        reason = f"{op!r} may only name the volunteer's own workers"
                        deny(comm, op, reason)
                        return _refusal(op, reason)
            elif ident.cn != "hubcat-operator":
                reason = f"operator certificate with unexpected CN {ident.cn!r}"
                deny(comm, op, reason)
                return _refusal(op, reason)
            result = handler(comm, **msg) if _takes_comm(handler) else handler(**msg)
            if hasattr(result, "__await__"):
                result = await result
            return result

        gated.__name__ = getattr(handler, "__name__", op)
        return gated

    for op, handler in list(scheduler.handlers.items()):
        scheduler.handlers[op] = wrap(op, handler)

    finished = scheduler.stream_handlers["task-finished"]
    erred = scheduler.stream_handlers["task-erred"]

    def task_finished(*args, **msg):
        msg["type"] = None  # a pickled class the client would unpickle
        return finished(*args, **msg)

    def task_erred(*args, **msg):
        from distributed.protocol import to_serialize

        from grid.errors import RemoteTaskError

        text = str(msg.get("exception_text") or "task failed")[:2000]
        worker = msg.get("worker", "?")
        msg["exception"] = to_serialize(RemoteTaskError(f"task failed on {worker}: {text}"))
        msg["traceback"] = None
        return erred(*args, **msg)

    scheduler.stream_handlers["task-finished"] = task_finished
    scheduler.stream_handlers["task-erred"] = task_erred
    scheduler.hubcat_gate = authority
    logger.info("hubcat gate installed (grid directory %s)", authority.directory)


def _takes_comm(handler) -> bool:
    from distributed.core import _expects_comm

    return _expects_comm(handler)


def _refusal(op: str, reason: str) -> dict:
    return {"status": "error", "message": f"hubcat gate refused {op!r}: {reason}"}


def dask_setup(scheduler) -> None:
    """Preload hook: install the gate using the grid directory in ``HUBCAT_GRID_DIR``."""
    from grid.errors import EnrollmentError

    directory = os.environ.get("HUBCAT_GRID_DIR")
    if not directory:
        msg = (
            "the grid.gate preload needs HUBCAT_GRID_DIR set to the grid directory "
            "(run the scheduler with `hubcat grid scheduler DIR`)"
        )
        raise EnrollmentError(msg)
    install_gate(scheduler, GridAuthority.open(directory))
