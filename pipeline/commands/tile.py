"""``hubcat tile``: cut mosaics into a tile store (Zarr v3 + metadata), incrementally."""

from __future__ import annotations

import argparse
import json
import sys
import time

from pipeline.commands._options import add_json, add_progress, zooms
from pipeline.commands._progress import progress_bar

__all__ = ["register", "run_tile"]


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        msg = f"--min-coverage {text!r}: expected a fraction in (0, 1], e.g. 0.5"
        raise argparse.ArgumentTypeError(msg)
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tile",
        help="cut FITS mosaics (local or s3://) into 224x224 tiles in a tile store",
        description=(
            "Tile every SOURCE (drizzled FITS mosaic, .fits.gz, or s3://bucket/key) into the tile "
            "store at --store, at each zoom (binning factor). A source already in the store (same "
            "content hash) is skipped; a source that cannot be tiled is reported with its reason "
            "and the others complete. Exit status: 0 all tiled, 3 some failed, 1 error. The "
            "tiling parameters are fixed when the store is created."
        ),
    )
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="FITS path or s3:// URI")
    parser.add_argument(
        "--store", required=True, metavar="PATH", help="tile store folder or s3:// prefix"
    )
    parser.add_argument("--zooms", type=zooms, help="binning factors (default 1,2,4)")
    parser.add_argument(
        "--stride", type=int, metavar="N", help="step between tiles in tile pixels (default 224)"
    )
    parser.add_argument(
        "--min-coverage",
        type=_fraction,
        metavar="F",
        help="minimum valid-footprint fraction of a kept tile (default 0.5)",
    )
    parser.add_argument(
        "--unit-size", type=int, metavar="N", help="tiles per work unit (default 256)"
    )
    parser.add_argument(
        "--centred", action="store_true", help="also cut tiles centred on extended sources"
    )
    parser.add_argument("--workers", type=int, help="threads cutting blocks (default 2)")
    add_json(parser)
    add_progress(parser)
    parser.set_defaults(func=run_tile)


def run_tile(args: argparse.Namespace) -> int:
    """Run ``hubcat tile``; return 0 when every source is in the store, 3 when some failed."""
    from hubcat.storage import open_object_store
    from tiling import TileStore, TilingConfig, tile_sources

    options = {
        "zooms": args.zooms,
        "stride": args.stride,
        "min_coverage": args.min_coverage,
        "unit_size": args.unit_size,
        "centred_cutouts": True if args.centred else None,
    }
    options = {k: v for k, v in options.items() if v is not None}
    show = not (args.no_progress or args.json)
    # the command draws one bar over the sources; the store reports nothing itself
    runtime = {"workers": args.workers or 2}
    exists = open_object_store(args.store).exists("zarr.json")
    if exists:
        store = TileStore.open(args.store)
        if options:
            TileStore.open_or_create(
                args.store, TilingConfig(**{**store.config.to_dict(), **options})
            )
    else:
        store = TileStore.create(args.store, TilingConfig(**options))
    store.config = TilingConfig(**{**store.config.to_dict(), **runtime})
    t0 = time.perf_counter()
    with progress_bar("tiling", len(args.sources), enabled=show) as update:
        report = tile_sources(
            store, args.sources, progress=lambda _stage, done, _total, note: update(done, note=note)
        )
    seconds = time.perf_counter() - t0
    if args.json:
        out = {
            "store": store.uri,
            "tiling_digest": store.digest,
            "seconds": round(seconds, 3),
            "added": [
                {
                    "source": r.source,
                    "sha256": r.source_sha256,
                    "mosaics": [
                        {
                            "mosaic_id": m.mosaic_id,
                            "hdu": m.hdu,
                            "status": m.status,
                            "tiles_per_zoom": m.tiles_per_zoom,
                            "skipped_zooms": m.skipped_zooms,
                        }
                        for m in r.mosaics
                    ],
                    "skipped_hdus": r.skipped_hdus,
                    "warnings": r.warnings,
                }
                for r in report.added
            ],
            "failed": report.failed,
        }
        print(json.dumps(out, indent=1))
    else:
        for r in report.added:
            print(r.summary())
        print(report.summary())
        total = len(store.metadata())
        print(f"tile store {store.uri}: {total} tiles; {seconds:.1f} s")
    sys.stdout.flush()
    return 0 if report.ok else 3
