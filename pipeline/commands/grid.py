"""``hubcat grid``: the volunteer grid (init, enroll, revoke, scheduler, status, selftest)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["register"]

#: ``--grid-dir`` as in ``run``/``embed``/``reprocess``; ``--dir`` is the older spelling.
_DIR_FLAGS = ("--grid-dir", "--dir")


def _env_dir(default: Path | None) -> Path | None:
    value = os.environ.get("HUBCAT_GRID_DIR")
    return Path(value) if value else default


def _dir_options(help_text: str) -> dict:
    return {
        "type": Path,
        "dest": "dir",
        "default": _env_dir(Path("grid")),
        "help": f"{help_text} (default: $HUBCAT_GRID_DIR or ./grid)",
    }


def register(subparsers) -> None:
    """Add ``hubcat grid ...`` to the ``hubcat`` parser."""
    p = subparsers.add_parser(
        "grid",
        help="volunteer grid: CA, enrolment, TLS scheduler, status, self-test",
        description="Run the embedding stage on enrolled volunteers' `dask worker` processes.",
    )
    sub = p.add_subparsers(dest="grid_command", metavar="ACTION", required=True)

    q = sub.add_parser("init", help="create the private CA and the operator's certificates")
    q.add_argument("dir", type=Path, help="new grid directory (keep it private)")
    q.add_argument("--host", action="append", default=None, help="scheduler host name/IP (repeat)")
    q.add_argument(
        "--days", type=int, default=365, help="validity of the CA and operator certificate"
    )
    q.set_defaults(func=_init)

    q = sub.add_parser("enroll", help="issue a short-lived volunteer certificate")
    q.add_argument("name", help="volunteer id (certificate CN and worker --name)")
    q.add_argument(*_DIR_FLAGS, **_dir_options("grid directory"))
    q.add_argument("--days", type=float, default=30, help="certificate validity in days")
    q.add_argument(
        "--account",
        default=None,
        help="the person or organisation behind this volunteer (replicas of a unit never go "
        "to two volunteers of one account; default: the name)",
    )
    q.add_argument("--scheduler", default="tls://SCHEDULER-HOST:8786", help="scheduler address")
    q.add_argument("--nthreads", type=int, default=1)
    q.add_argument("--memory-limit", default="4GiB")
    q.add_argument("--lifetime", default="8h")
    q.set_defaults(func=_enroll)

    q = sub.add_parser("revoke", help="refuse a volunteer from now on")
    q.add_argument("name")
    q.add_argument(*_DIR_FLAGS, **_dir_options("grid directory"))
    q.set_defaults(func=_revoke)

    q = sub.add_parser("scheduler", help="run the TLS scheduler with the admission gate")
    q.add_argument(
        *_DIR_FLAGS,
        **_dir_options(
            "grid directory, or its scheduler/ folder alone (all a scheduler host needs)"
        ),
    )
    q.add_argument("--host", default="0.0.0.0")
    q.add_argument("--port", type=int, default=8786)
    q.add_argument(
        "--dashboard", default="127.0.0.1:8787", help="dashboard address (keep it local)"
    )
    q.add_argument("--worker-ttl", help="remove a silent worker after this (default: 60s)")
    q.add_argument(
        "--allowed-failures", type=int, help="worker deaths a task survives (default: 10)"
    )
    q.add_argument("--print-command", action="store_true", help="print the command and exit")
    q.set_defaults(func=_scheduler)

    q = sub.add_parser("status", help="volunteers, units done/pending/disputed, credit")
    q.add_argument("tiles", help="tile store (path or s3:// URI)")
    q.add_argument(
        *_DIR_FLAGS,
        type=Path,
        dest="dir",
        default=_env_dir(None),
        help="grid directory (to list enrolments)",
    )
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_status)

    q = sub.add_parser("selftest", help="real TLS grid on loopback with liars and a killed worker")
    q.add_argument("--workers", type=int, default=4)
    q.add_argument("--liars", type=int, default=1)
    q.add_argument("--kill", type=int, default=1)
    q.add_argument(
        "--spoofers", type=int, default=0, help="workers that forge attribution and send payloads"
    )
    q.add_argument(
        "--overwriters", type=int, default=0, help="workers that overwrite others' results"
    )
    q.add_argument(
        "--colluders", type=int, default=0, help="workers that return the same wrong vectors"
    )
    q.add_argument("--units", type=int, default=6)
    q.add_argument("--unit-size", type=int, default=2)
    q.add_argument("--workdir", type=Path, default=None)
    q.set_defaults(func=_selftest)


def _init(args: argparse.Namespace) -> int:
    from grid import GridAuthority

    hosts = tuple(args.host) if args.host else ("localhost", "127.0.0.1")
    auth = GridAuthority.init(args.dir, hosts=hosts, days=args.days)
    print(f"grid directory {auth.directory}: CA, scheduler and operator certificates created")
    print(
        f"next: hubcat grid enroll NAME --grid-dir {args.dir}; "
        f"hubcat grid scheduler --grid-dir {args.dir}"
    )
    return 0


def _enroll(args: argparse.Namespace) -> int:
    from grid import GridAuthority

    enr = GridAuthority.open(args.dir).enroll(args.name, days=args.days, account=args.account)
    print(f"enrolled {enr.name} until {enr.not_after:%Y-%m-%d %H:%M}Z (serial {enr.serial:x})")
    print(f"give the volunteer: {enr.ca}, {enr.cert}, {enr.key}")
    print("the volunteer installs hubcat and runs, in the folder holding those three files:")
    print()
    print(
        "  "
        + enr.command(
            args.scheduler,
            nthreads=args.nthreads,
            memory_limit=args.memory_limit,
            lifetime=args.lifetime,
        )
    )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from grid import GridAuthority

    GridAuthority.open(args.dir).revoke(args.name)
    print(
        f"{args.name} revoked: a scheduler given {GridAuthority.open(args.dir).scheduler_folder} "
        "removes its workers within a second"
    )
    return 0


def _scheduler(args: argparse.Namespace) -> int:
    from grid import GridAuthority, GridConfig, scheduler_argv

    auth = GridAuthority.open(args.dir)
    given = {"allowed_failures": args.allowed_failures, "worker_ttl": args.worker_ttl}
    settings = {k: v for k, v in given.items() if v is not None}  # else GridConfig's defaults
    argv, env = scheduler_argv(
        auth,
        host=args.host,
        port=args.port,
        dashboard=args.dashboard,
        config=GridConfig(**settings),
    )
    if args.print_command:
        print(" ".join(f"{k}={v!r}" for k, v in env.items()), " ".join(argv))
        return 0
    print(f"grid scheduler on tls://{args.host}:{args.port} (dashboard http://{args.dashboard})")
    from grid import scheduler_environment

    return subprocess.call(argv, env=scheduler_environment(env))


def _status(args: argparse.Namespace) -> int:
    from grid import grid_status, render_status

    status = grid_status(args.tiles, grid_dir=args.dir)
    if args.json:
        print(json.dumps(status, indent=1, default=str))
    else:
        render_status(status)
    return 0


def _selftest(args: argparse.Namespace) -> int:
    import contextlib

    from grid import selftest
    from pipeline.commands._progress import StageBars

    with StageBars() if sys.stderr.isatty() else contextlib.nullcontext() as bars:
        result = selftest(
            args.workers,
            args.liars,
            args.kill,
            spoofers=args.spoofers,
            overwriters=args.overwriters,
            colluders=args.colluders,
            units=args.units,
            unit_size=args.unit_size,
            workdir=args.workdir,
            progress=bars,
        )
    print(json.dumps(result, indent=1))
    ok = result["units_lost"] == 0 and result["code_executed"] == 0
    ok = ok and result["forged_ledger_entries_accepted"] == 0 and not result["honest_blamed"]
    ok = ok and set(result["liars"]) <= set(result["liars_detected"])
    if not result["colluders"]:  # colluders can win a unit they share: a measured residual
        ok = ok and result["equal_to_honest"] and result["wrong_vectors_accepted"] == 0
    return 0 if ok else 1
