"""``hubcat reprocess``: re-embed a catalogue's tiles with another model (a new model version)."""

from __future__ import annotations

import argparse
import json
import logging

from pipeline.commands._options import add_runtime_options, runtime_environment

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
    parser.add_argument("--model", required=True, help="timm / registered model name")
    parser.add_argument("--weights", metavar="FILE", help="local weights file for --model")
    add_runtime_options(parser)
    parser.add_argument(
        "--scheduler", metavar="ADDRESS", help="Dask scheduler (default: local cluster)"
    )
    parser.add_argument("--workers", type=int, help="worker processes of the local cluster")
    parser.add_argument(
        "--endpoint-url", metavar="URL", help="S3 endpoint (default: AWS_ENDPOINT_URL)"
    )
    parser.add_argument(
        "--signing-key",
        metavar="FILE",
        help="operator's Ed25519 key to sign the catalogue (default: $HUBCAT_SIGNING_KEY or ~/.hubcat/hubcat.key, made on first use)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_reprocess)


def run_reprocess(args: argparse.Namespace) -> int:
    """Run the command with ``--runtime``/``--precision`` as the embedding defaults."""
    with runtime_environment(args):
        return _run_reprocess(args)


def _run_reprocess(args: argparse.Namespace) -> int:
    from pipeline.run import reprocess_catalogue

    if not args.verbose:
        logging.getLogger("distributed").setLevel(logging.ERROR)
    from pipeline._keys import operator_signing_key

    signing_key = operator_signing_key(args.signing_key)
    summary = reprocess_catalogue(
        args.catalogue,
        args.model,
        args.weights,
        scheduler=args.scheduler,
        workers=args.workers,
        signing_key=signing_key,
        endpoint_url=args.endpoint_url,
        progress=not (args.no_progress or args.json),
    )
    if args.json:
        print(json.dumps(summary.to_dict(), sort_keys=True))
    else:
        print(summary.render())
        print(f"model version {summary.catalogue_version}: Catalogue.open({summary.catalogue!r})")
    if summary.merkle_root is None:
        return 1
    return 0 if summary.ok else 3
