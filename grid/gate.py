"""The scheduler's preload: ``dask scheduler --preload grid.gate`` (``hubcat grid scheduler``).

Importing this module (Dask imports a preload when the scheduler is created, before it
listens) installs the grid's wire with the *scheduler* policy (:mod:`grid._wire`): a peer
with the operator's certificate is read as Dask reads it; a volunteer's frames are size-capped
and decoded without unpickling anything, then pass the message filter of
:class:`grid._boundary.VolunteerFilter` before Dask dispatches them; a peer with no
certificate, or any other role, is disconnected after the TLS handshake.

:func:`dask_setup` then reads the scheduler's folder (``HUBCAT_GRID_DIR``: the ``scheduler/``
folder of the grid directory, holding the CA certificate, the scheduler's certificate and the
register, and *no* operator secret: the scheduler refuses to start if it finds ``ca.key``,
``operator.key`` or ``ledger.key`` there), installs the filter, blocks the handlers in
:data:`grid._boundary.BLOCKED_HANDLERS`, registers :class:`grid._boundary.AttributionPlugin`
and starts :class:`grid._boundary.RegisterWatcher`.

Import it only in a scheduler process: it fixes the process's role.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys

from grid._boundary import (
    BLOCKED_HANDLERS,
    AttributionPlugin,
    RegisterWatcher,
    VolunteerFilter,
    install_operator_handlers,
)
from grid._pki import GridAuthority
from grid._wire import WirePolicy, gate_listeners, install_wire
from grid.errors import EnrollmentError

__all__ = ["dask_setup", "install_gate"]

logger = logging.getLogger("grid.gate")

install_wire(WirePolicy("scheduler"))


def install_gate(scheduler, authority: GridAuthority) -> None:
    """Put the volunteer boundary on ``scheduler`` (a :class:`distributed.Scheduler`).

    Parameters
    ----------
    scheduler : distributed.Scheduler
    authority : GridAuthority
        The scheduler's folder (register of the enrolled volunteers).

    Raises
    ------
    EnrollmentError
        If the folder holds an operator secret (the CA, operator or ledger key).
    grid.errors.GridError
        If the scheduler listens on anything but ``tls://``.
    """
    secrets = authority.secrets_present()
    if secrets:
        msg = (
            f"the scheduler's folder {authority.directory} holds {', '.join(secrets)}: those "
            "keys must stay with the operator; give the scheduler only the grid directory's "
            "scheduler/ folder (`hubcat grid scheduler --dir GRID` does)"
        )
        raise EnrollmentError(msg)

    def admitted(name: str) -> str | None:
        entry = authority.register()["volunteers"].get(name)
        if entry is None:
            return f"{name!r} is not enrolled"
        if entry.get("revoked"):
            return f"{name!r} has been revoked"
        not_after = dt.datetime.fromisoformat(entry["not_after"])
        if not_after <= dt.datetime.now(dt.UTC):
            return f"the certificate of {name!r} expired at {not_after:%Y-%m-%d %H:%M}Z"
        return None

    gate_listeners(scheduler)
    scheduler.blocked_handlers = sorted(set(scheduler.blocked_handlers) | set(BLOCKED_HANDLERS))
    attribution = AttributionPlugin(scheduler)
    scheduler.add_plugin(attribution)
    watcher = RegisterWatcher(scheduler, admitted)
    install_operator_handlers(scheduler, attribution, watcher)
    known = {a: str(ws.name) for a, ws in scheduler.workers.items()}

    def expected_worker_cn(address: str) -> str | None:
        ws = scheduler.workers.get(address)
        return str(ws.name) if ws is not None else known.get(address)

    install_wire(
        WirePolicy(
            "scheduler",
            message_filter=VolunteerFilter(scheduler, authority.check_volunteer),
            expected_worker_cn=expected_worker_cn,
        )
    )
    scheduler.hubcat_gate = authority
    logger.info("hubcat gate installed (scheduler folder %s)", authority.directory)


def dask_setup(scheduler) -> None:
    """Preload hook: install the gate using the scheduler folder in ``HUBCAT_GRID_DIR``.

    Dask logs a failing preload and goes on; a grid scheduler without its gate must not, so a
    failure here ends the process (exit status 3) after saying why.
    """
    try:
        directory = os.environ.get("HUBCAT_GRID_DIR")
        if not directory:
            msg = (
                "the grid.gate preload needs HUBCAT_GRID_DIR set to the scheduler's folder "
                "(run the scheduler with `hubcat grid scheduler --dir GRID`)"
            )
            raise EnrollmentError(msg)
        install_gate(scheduler, GridAuthority(directory))
    except Exception as exc:
        logger.critical("hubcat gate not installed, the scheduler stops: %s", exc)
        print(f"hubcat grid scheduler: {exc}", file=sys.stderr, flush=True)
        os._exit(3)
