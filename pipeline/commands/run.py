"""``hubcat run``: tile, embed and catalogue mosaics; resumable, one bad source never stops it."""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline.commands._options import (
    add_grid_dir,
    add_json,
    add_progress,
    add_runtime_options,
    add_signing_key,
    runtime_environment,
    zooms,
)
from pipeline.commands._progress import StageBars

__all__ = ["EXIT_PARTIAL", "register", "run_command"]

#: Exit status when the catalogue was written but some sources or units failed.
EXIT_PARTIAL = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="tile, embed and catalogue mosaics (local files, S3, MAST); resumable",
        description=(
            "Tile every source into the tile store, embed the tiles on a Dask grid and build "
            "(or extend) the catalogue at --out. The plan and the state of every source are "
            "recorded under CATALOGUE/run/: if the run is killed, re-run the same command and it "
            "continues without recomputing finished work. A source that cannot be read is "
            "reported with its reason and the others complete. Exit status: 0 all done, "
            f"{EXIT_PARTIAL} catalogue written but something failed, 1 error."
        ),
    )
    parser.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="FITS path, folder, glob, s3://bucket/key.fits, s3://bucket/prefix/, or @LISTFILE",
    )
    parser.add_argument(
        "--out", required=True, metavar="CATALOGUE", help="catalogue folder or s3:// prefix"
    )
    parser.add_argument("--store", metavar="URI", help="tile store (default: CATALOGUE/tiles)")
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler address, e.g. tls://HOST:8786 with --grid-dir (default: a local cluster)",
    )
    add_grid_dir(parser)
    parser.add_argument("--workers", type=int, help="worker processes of the local cluster")
    parser.add_argument(
        "--mast",
        action="append",
        default=[],
        metavar="ID",
        help="MAST HST dataset id, read anonymously from s3://stpubdata (repeatable)",
    )
    parser.add_argument(
        "--suffix", default="drz", help="product suffix of --mast datasets (default: drz)"
    )
    parser.add_argument(
        "--endpoint-url", metavar="URL", help="S3 endpoint (default: AWS_ENDPOINT_URL or AWS)"
    )
    parser.add_argument(
        "--model",
        help="embedding model name, or a tuned MODEL_DIR from `hubcat tune` (default: tf_efficientnet_lite0)",
    )
    parser.add_argument("--weights", metavar="FILE", help="local weights file for --model")
    add_runtime_options(parser)
    parser.add_argument("--zooms", type=zooms, help="binning factors, e.g. 1,2,4")
    parser.add_argument(
        "--stride", type=int, help="step between tiles in tile pixels (default 224)"
    )
    parser.add_argument("--unit-size", type=int, help="tiles per work unit")
    add_signing_key(parser)
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="try again the sources that failed in earlier runs",
    )
    add_json(parser)
    add_progress(parser)
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Run the command with ``--runtime``/``--precision`` as the embedding defaults."""
    with runtime_environment(args):
        return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    from pipeline.errors import SourceSpecError
    from pipeline.run import run_pipeline

    if not args.verbose:  # the scheduler of a local cluster runs in this process
        logging.getLogger("distributed").setLevel(logging.ERROR)

    if not args.sources and not args.mast and not _has_plan(args.out):
        msg = "no SOURCE given and no earlier run recorded at --out; name FITS files, s3:// URIs or --mast ids"
        raise SourceSpecError(msg)
    from pipeline._connect import operator_security, scheduler_client
    from pipeline._keys import operator_signing_key

    operator_security(args.scheduler, args.grid_dir)  # a missing certificate stops us before work
    signing_key = operator_signing_key(args.signing_key)
    show = not (args.no_progress or args.json)
    with scheduler_client(args.scheduler, args.grid_dir) as client:
        if show:
            with StageBars() as bars:
                summary = _run(args, client, signing_key, run_pipeline, bars)
        else:
            summary = _run(args, client, signing_key, run_pipeline, False)
    if args.json:
        print(summary.to_json())
    else:
        print(summary.render())
    sys.stdout.flush()
    if summary.merkle_root is None:
        return 1
    return 0 if summary.ok else EXIT_PARTIAL


def _run(args: argparse.Namespace, client, signing_key, run_pipeline, progress):
    return run_pipeline(
        args.sources,
        args.out,
        store=args.store,
        client=client,
        model=args.model,
        weights=args.weights,
        zooms=args.zooms,
        stride=args.stride,
        unit_size=args.unit_size,
        signing_key=signing_key,
        workers=args.workers,
        mast=args.mast,
        suffix=args.suffix,
        endpoint_url=args.endpoint_url,
        retry_failed=args.retry_failed,
        progress=progress,
    )


def _has_plan(out: str) -> bool:
    from pipeline.run import open_run_state

    try:
        return open_run_state(out).read_plan() is not None
    except Exception:
        return False
