"""``hubcat demo``: the whole pipeline on real Hubble pixels that ship with a registry package."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from pipeline.commands._progress import StageBars

__all__ = ["register", "run_demo"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on bundled real Hubble images (LocalCluster, local folders)",
        description=(
            "Tile two real drizzled WFPC2 images (shipped by the mpdaf package), embed every tile "
            "with the offline default model on a local Dask cluster, build the catalogue with its "
            "Merkle-rooted provenance, and show the neighbours of one tile."
        ),
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("demo-catalogue"),
        help="catalogue folder (default: %(default)s)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="local worker processes (default: 2)"
    )
    parser.add_argument("-k", type=int, default=5, help="neighbours to show (default: 5)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from catalog import Catalogue
    from pipeline._keys import operator_signing_key
    from pipeline.run import run_pipeline
    from pipeline.samples import SAMPLES, sample_paths

    sources = sample_paths()
    signing_key = operator_signing_key()
    print("hubcat demo: real Hubble sample mosaics")
    for sample, path in zip(SAMPLES, sources, strict=True):
        print(f"  {path.name}: {sample.description}")
    with contextlib.ExitStack() as stack:
        bars = False if args.no_progress else stack.enter_context(StageBars())
        summary = run_pipeline(
            [str(p) for p in sources],
            args.out,
            zooms=(1, 2),
            stride=112,
            workers=args.workers,
            signing_key=signing_key,
            progress=bars,
        )
    print(summary.render())

    cat = Catalogue.open(args.out)
    meta = cat.metadata()
    zoom1 = meta[meta["zoom"] == 1]
    query = (zoom1 if len(zoom1) else meta).iloc[0]["tile_id"]
    result = cat.similar(query, k=min(args.k, len(meta)))
    print(f"\nNeighbours of tile {query} (the first row is the tile itself):")
    cols = [
        c for c in ("tile_id", "similarity", "ra", "dec", "zoom", "filter") if c in result.colnames
    ]
    result[cols].pprint(max_lines=-1, max_width=-1)
    print(
        f"\nCatalogue written to {args.out}/  (open it with: from catalog import Catalogue; "
        f"Catalogue.open({str(args.out)!r}))"
    )
    return 0 if summary.ok else 1
