"""``hubcat verify``: check a catalogue's provenance with only the catalogue and a public key."""

from __future__ import annotations

import argparse
import json
import sys
import time

from pipeline.commands._options import add_catalogue_version, add_json, add_progress
from pipeline.commands._progress import progress_bar

__all__ = ["register", "run_verify"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="re-hash a catalogue's tiles and embeddings and check its signed Merkle root",
        description=(
            "Re-hash every stored tile and embedding of CATALOGUE, compare every metadata value "
            "that is part of a leaf with the signed leaf, rebuild the Merkle root, check the "
            "checkpoint signature, and optionally prove one tile's inclusion (--tile) and that "
            "the catalogue extends an older checkpoint (--against). Exit status 0 only if "
            "everything holds; every failing tile or file is named."
        ),
    )
    parser.add_argument("catalogue", metavar="CATALOGUE", help="catalogue folder or s3:// prefix")
    parser.add_argument("--tile", metavar="ID", help="print and check this tile's inclusion proof")
    parser.add_argument(
        "--against",
        metavar="OLD_CHECKPOINT",
        help="file of an older checkpoint this catalogue must extend (append-only)",
    )
    parser.add_argument(
        "--public-key",
        metavar="FILE",
        help="the operator's public key (default: the key the catalogue publishes)",
    )
    add_catalogue_version(parser, "--version")
    parser.add_argument(
        "--tile-store", metavar="URI", help="read tile pixels from here instead of the manifest's"
    )
    add_json(parser, "the report")
    add_progress(parser)
    parser.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    """Verify; print the report (and the proof of ``--tile``); 0 if all holds, else 1."""
    from catalog import Catalogue
    from catalog.provenance import verify_catalogue

    t0 = time.perf_counter()
    tile_store = None
    if args.tile_store:
        from tiling import TileStore

        tile_store = TileStore.open(args.tile_store)
    cat = Catalogue.open(args.catalogue, version=args.catalogue_version, tile_store=tile_store)
    kwargs = {"tile_id": args.tile, "against": args.against, "public_key": args.public_key}
    show = not (args.json or args.no_progress)
    with progress_bar("verifying", None, enabled=show) as update:
        report = verify_catalogue(
            cat,
            progress=lambda done, total: update(done, total, "checks (vectors, then pixels)"),
            **kwargs,
        )
    dt = time.perf_counter() - t0
    if args.json:
        doc = report.to_dict()
        doc["seconds"] = round(dt, 3)
        json.dump(doc, sys.stdout, sort_keys=True)
        print()
        return 0 if report.ok else 1
    if report.proof is not None:
        print(report.proof)
    if report.consistency is not None:
        c = report.consistency
        print(f"consistency proof {c.old_size} -> {c.new_size} leaves:")
        for i, h in enumerate(c.proof):
            print(f"  proof[{i:2d}] {h}")
    print(report.summary())
    if report.ok:
        print(f"verified {report.tree_size} tiles in {dt:.1f} s: every check holds")
        return 0
    tiles = report.failed_tiles
    named = f" in {len(tiles)} tile(s): {', '.join(tiles[:10])}" if tiles else ""
    print(
        f"verification FAILED after {dt:.1f} s: {len(report.failures)} failure(s){named}",
        file=sys.stderr,
    )
    return 1
