"""Start a grid scheduler and volunteer workers as real processes (``dask scheduler/worker``)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from grid._boundary import scheduler_config
from grid._config import GridConfig
from grid._pki import GridAuthority
from grid.errors import GridError

__all__ = [
    "scheduler_argv",
    "scheduler_environment",
    "start_scheduler",
    "start_volunteer",
    "start_worker",
    "stop_process",
    "stop_processes",
]


def _env_config(config: dict) -> dict[str, str]:
    env = {}
    for key, value in config.items():
        name = "DASK_" + key.upper().replace(".", "__").replace("-", "_")
        env[name] = repr(value) if isinstance(value, list) else str(value)
    return env


def scheduler_argv(
    authority: GridAuthority,
    *,
    host: str = "127.0.0.1",
    port: int = 8786,
    dashboard: str = "127.0.0.1:8787",
    scheduler_file: Path | None = None,
    config: GridConfig | None = None,
    **settings: object,
) -> tuple[list[str], dict[str, str]]:
    """The ``dask scheduler`` command line and environment of a grid scheduler.

    Its churn settings come from ``config`` (default ``GridConfig()``) with ``settings``
    (``GridConfig`` fields such as ``worker_ttl="10s"``) replacing some of them.

    TLS is required, the :mod:`grid.gate` preload admits enrolled volunteers and the operator,
    and ``distributed.scheduler.blocked-handlers`` lists :data:`grid._boundary.BLOCKED_HANDLERS`.
    The scheduler is given only the grid directory's ``scheduler/`` folder.

    Parameters
    ----------
    authority : GridAuthority
        The grid directory (its CA and scheduler certificate).
    host : str
        Interface the scheduler listens on.
    port : int
        TLS port of the scheduler.
    dashboard : str
        ``host:port`` of the dashboard.
    scheduler_file : Path or None
        Where the scheduler writes its address (``--scheduler-file``), if anywhere.
    config : GridConfig or None
        The grid's parameters; None: ``GridConfig()``.
    **settings
        :class:`GridConfig` fields replacing those of ``config``.

    Returns
    -------
    argv : list of str
        The command (``python -m dask scheduler ...``).
    env : dict of str to str
        ``DASK_*`` variables carrying the configuration, and ``HUBCAT_GRID_DIR``; to be
        added to :func:`scheduler_environment`.

    Raises
    ------
    TypeError
        If a name in ``settings`` is not a :class:`GridConfig` field.
    """
    cert, key = authority.cert_files("scheduler")
    argv = [
        sys.executable,
        "-m",
        "dask",
        "scheduler",
        "--protocol",
        "tls",
        "--host",
        host,
        "--port",
        str(port),
        "--tls-ca-file",
        str(authority.ca_file),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--dashboard-address",
        dashboard,
        "--preload",
        "grid.gate",
    ]
    if scheduler_file is not None:
        argv += ["--scheduler-file", str(scheduler_file)]
    config = dataclasses.replace(config or GridConfig(), **settings)
    env = _env_config(scheduler_config(config))
    env["HUBCAT_GRID_DIR"] = str(authority.scheduler_folder)
    return argv, env


def scheduler_environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment for a scheduler: without the operator's keys and credentials.

    ``HUBCAT_*`` variables (signing and ledger key paths, the grid directory) and cloud
    credentials are left out, so nothing in the scheduler's environment leads to a secret.

    Parameters
    ----------
    extra : dict of str to str
        Variables to add (those :func:`scheduler_argv` returns).

    Returns
    -------
    dict of str to str
        ``os.environ`` without ``HUBCAT_*`` and ``AWS_*`` variables, updated with ``extra``.
    """
    drop = ("HUBCAT_", "AWS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, **extra}


def start_scheduler(
    authority: GridAuthority, workdir: Path, *, timeout: float = 60.0, **kwargs
) -> tuple[subprocess.Popen, str]:
    """Start a grid scheduler process on loopback; return it and its ``tls://`` address."""
    workdir.mkdir(parents=True, exist_ok=True)
    sfile = workdir / "scheduler.json"
    sfile.unlink(missing_ok=True)
    argv, env = scheduler_argv(
        authority, port=0, dashboard="127.0.0.1:0", scheduler_file=sfile, **kwargs
    )
    log = open(workdir / "scheduler.log", "wb")
    proc = subprocess.Popen(
        argv,
        env=scheduler_environment(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            msg = f"grid scheduler exited with status {proc.returncode}; see {workdir / 'scheduler.log'}"
            raise GridError(msg)
        if sfile.exists():
            try:
                return proc, json.loads(sfile.read_text())["address"]
            except (ValueError, KeyError):
                pass
        time.sleep(0.2)
    stop_process(proc)
    msg = f"grid scheduler did not start within {timeout:.0f} s; see {workdir / 'scheduler.log'}"
    raise GridError(msg)


def start_worker(
    address: str,
    *,
    name: str,
    ca: Path,
    cert: Path | None,
    key: Path | None,
    log: Path,
    nthreads: int = 1,
    preloads: tuple[str, ...] = ("grid.volunteer",),
    env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> subprocess.Popen:
    """Start one ``dask worker`` process the way a volunteer does (TLS, ``--name``, preload)."""
    argv = [
        sys.executable,
        "-m",
        "dask",
        "worker",
        address,
        "--name",
        name,
        "--nthreads",
        str(nthreads),
        "--no-nanny",
        "--no-dashboard",
        "--memory-limit",
        "3GiB",
        "--tls-ca-file",
        str(ca),
    ]
    if cert is not None:
        argv += ["--tls-cert", str(cert)]
    if key is not None:
        argv += ["--tls-key", str(key)]
    for p in preloads:
        argv += ["--preload", p]
    argv += list(extra_args)
    full_env = {
        **os.environ,
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "OMP_NUM_THREADS": str(nthreads),
        **(env or {}),
    }
    fh = open(log, "wb")
    return subprocess.Popen(
        argv, env=full_env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
    )


def start_volunteer(
    authority: GridAuthority,
    address: str,
    logs: Path,
    name: str,
    *,
    preloads: tuple[str, ...] = ("grid.volunteer",),
    env: dict[str, str] | None = None,
    days: float = 1,
) -> subprocess.Popen:
    """Enrol volunteer ``name`` and start its ``dask worker`` (log in ``logs/NAME.log``)."""
    enr = authority.enroll(name, days=days)
    logs.mkdir(parents=True, exist_ok=True)
    return start_worker(
        address,
        name=name,
        ca=authority.ca_file,
        cert=enr.cert,
        key=enr.key,
        log=logs / f"{name}.log",
        preloads=preloads,
        env=env or None,
    )


def stop_process(proc: subprocess.Popen, *, timeout: float = 10.0) -> None:
    """Stop a process started here (SIGTERM, then SIGKILL), and reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def stop_processes(procs: list[subprocess.Popen], *, timeout: float = 10.0) -> None:
    """Stop several processes started here: SIGTERM to all first, then wait (SIGKILL if needed)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
