"""``hubcat reprocess``: re-embed a catalogue's tiles with another model (a new model version)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging

from pipeline.commands._options import (
    add_grid_dir,
    add_json,
    add_progress,
    add_runtime_options,
    add_signing_key,
    runtime_environment,
)
from pipeline.commands._progress import StageBars

__all__ = ["register", "run_reprocess"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reprocess",
        help="re-embed every tile of a catalogue with another model (tiles are not re-cut)",
        description=(
            "Embed the tiles of CATALOGUE's tile store again with --model on the grid (resumable: "
            "re-run to continue), and write the new model's catalogue as a new model version "
            "under CATALOGUE/models/NAME-DIGEST/. Earlier versions are not touched and still "
            "open; `hubcat status CATALOGUE` lists every version."
        ),
    )
    parser.add_argument("catalogue", metavar="CATALOGUE", help="catalogue folder or s3:// prefix")
    parser.add_argument(
        "--model",
        required=True,
        help="timm / registered model name, or a tuned MODEL_DIR from `hubcat tune`",
    )
    parser.add_argument("--weights", metavar="FILE", help="local weights file for --model")
    add_runtime_options(parser)
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler address, e.g. tls://HOST:8786 with --grid-dir (default: a local cluster)",
    )
    add_grid_dir(parser)
    parser.add_argument("--workers", type=int, help="worker processes of the local cluster")
    parser.add_argument(
        "--endpoint-url", metavar="URL", help="S3 endpoint (default: AWS_ENDPOINT_URL)"
    )
    add_signing_key(parser)
    add_json(parser)
    add_progress(parser)
    parser.set_defaults(func=run_reprocess)


def run_reprocess(args: argparse.Namespace) -> int:
    """Run the command with ``--runtime``/``--precision`` as the embedding defaults."""
    with runtime_environment(args):
        return _run_reprocess(args)


def _run_reprocess(args: argparse.Namespace) -> int:
    from pipeline.reprocess import reprocess_catalogue

    if not args.verbose:
        logging.getLogger("distributed").setLevel(logging.ERROR)
    from pipeline._connect import operator_security, scheduler_client
    from pipeline._keys import operator_signing_key

    operator_security(args.scheduler, args.grid_dir)
    signing_key = operator_signing_key(args.signing_key)
    show = not (args.no_progress or args.json)
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(scheduler_client(args.scheduler, args.grid_dir))
        bars = stack.enter_context(StageBars()) if show else False
        summary = reprocess_catalogue(
            args.catalogue,
            args.model,
            args.weights,
            client=client,
            workers=args.workers,
            signing_key=signing_key,
            endpoint_url=args.endpoint_url,
            progress=bars,
        )
    if args.json:
        print(json.dumps(summary.to_dict(), sort_keys=True))
    else:
        print(summary.render())
        print(f"model version {summary.catalogue_version}: Catalogue.open({summary.catalogue!r})")
    if summary.merkle_root is None:
        return 1
    return 0 if summary.ok else 3
