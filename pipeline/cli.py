"""The ``hubcat`` command line.

Each sub-command lives in its own module under :mod:`pipeline.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to the function that runs it
(``func(args) -> int`` exit status). This module only discovers and dispatches them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from pipeline import commands

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Return the ``hubcat`` argument parser with every sub-command registered."""
    from pipeline import __version__

    parser = argparse.ArgumentParser(
        prog="hubcat",
        description=(
            "Hubble mosaics to a similarity-searchable catalogue, computed on a Dask grid, "
            "with a Merkle-rooted provenance record."
        ),
    )
    parser.add_argument("--version", action="version", version=f"hubcat {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hubcat`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    from hubcat.errors import HubcatError

    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # Dask sets its own loggers to INFO; they propagate here, so filter on the handler too.
    for handler in logging.root.handlers:
        handler.setLevel(level)
    if not args.verbose:  # a local cluster's scheduler and nannies log their shutdown chatter
        logging.getLogger("distributed").setLevel(logging.ERROR)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HubcatError as exc:
        print(f"hubcat {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"hubcat {args.command}: interrupted; re-run the same command to resume.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
