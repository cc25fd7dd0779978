"""The operator's connection to a grid scheduler, secured from the grid directory.

``hubcat run``, ``embed`` and ``reprocess`` accept ``--scheduler ADDRESS`` and ``--grid-dir DIR``
(default ``$HUBCAT_GRID_DIR``). A ``tls://`` address is reached with the operator certificate of
the grid directory made by ``hubcat grid init`` (``GridAuthority.open(dir).security("operator")``);
without one the command stops before any work with a message that says so.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from pipeline.errors import GridConnectionError

__all__ = ["operator_security", "scheduler_client"]


def operator_security(scheduler: str | None, grid_dir: str | os.PathLike[str] | None):
    """The :class:`distributed.Security` to reach ``scheduler``, or None for a plain address.

    Parameters
    ----------
    scheduler : str or None
        Scheduler address (``tls://host:8786``, ``tcp://host:8786``); None means a local
        cluster, which needs no security.
    grid_dir : path-like or None
        Grid directory holding ``ca.pem``, ``operator.pem`` and ``operator.key``.

    Raises
    ------
    GridConnectionError
        A ``tls://`` address without a grid directory, or a grid directory without the
        operator's certificate.
    """
    if not scheduler or not str(scheduler).startswith("tls://"):
        return None
    if not grid_dir:
        msg = (
            f"--scheduler {scheduler} is a TLS grid: give the grid directory made by "
            "`hubcat grid init DIR` with --grid-dir DIR (or set HUBCAT_GRID_DIR); its CA and "
            "operator certificate let this command connect"
        )
        raise GridConnectionError(msg)
    from grid import GridAuthority
    from grid.errors import GridError

    try:
        authority = GridAuthority.open(grid_dir)
    except GridError as exc:
        msg = f"--grid-dir {grid_dir}: {exc}"
        raise GridConnectionError(msg) from None
    cert, key = authority.cert_files("operator")
    missing = [str(p) for p in (cert, key) if not p.is_file()]
    if missing:
        msg = (
            f"--grid-dir {grid_dir} has no operator certificate ({', '.join(missing)} missing); "
            "use the directory made by `hubcat grid init` on the operator's machine"
        )
        raise GridConnectionError(msg)
    return authority.security("operator")


@contextlib.contextmanager
def scheduler_client(
    scheduler: str | None, grid_dir: str | os.PathLike[str] | None, *, timeout: float = 30.0
) -> Iterator[object | None]:
    """A :class:`distributed.Client` of ``scheduler`` for the duration of a command.

    Yields None when ``scheduler`` is None (the command starts its own local cluster).

    Raises
    ------
    GridConnectionError
        See :func:`operator_security`; also when the scheduler cannot be reached.
    """
    if not scheduler:
        yield None
        return
    security = operator_security(scheduler, grid_dir)
    from distributed import Client

    try:
        client = Client(scheduler, security=security, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        hint = "" if security is not None else " (a hubcat grid listens on tls://; add --grid-dir)"
        msg = f"cannot reach the scheduler at {scheduler} within {timeout:.0f} s: {exc}{hint}"
        raise GridConnectionError(msg) from None
    if security is not None:  # run_units reads the register (accounts, revocations) and
        client.hubcat_grid_dir = os.fspath(grid_dir)  # signs credit with the grid's ledger key
    try:
        yield client
    finally:
        client.close()
