"""``hubcat query``: similar tiles, or a cone search, from the command line."""

from __future__ import annotations

import argparse
import sys

from pipeline.commands._options import add_catalogue_version, angle

__all__ = ["parse_filters", "register", "run_query"]

FORMATS = ("table", "json", "csv", "votable")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "query",
        help="find tiles similar to a tile, a sky position or an image; or list / cone-search tiles",
        description=(
            "Query CATALOGUE (folder or s3:// prefix) for the K tiles most similar to a tile id, to "
            "the tile nearest a position (--ra/--dec), or to a FITS image embedded with the "
            "catalogue's own model. With --cone ANGLE, list the tiles whose centres are within "
            "ANGLE of --ra/--dec instead. Angles carry their unit (30arcsec, 1.5arcmin, 0.1deg; a "
            "bare number is refused); positions are ICRS degrees. Filters: --filter "
            "instrument=ACS --filter filter=F606W,F814W --filter zoom=2 --filter proposal=9822 "
            "--filter date=2002-01-01..2004-12-31 --filter region=RA,DEC,30arcsec."
        ),
    )
    parser.add_argument("catalogue", metavar="CATALOGUE")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--tile", metavar="ID", help="a tile_id of the catalogue")
    what.add_argument("--ra", type=float, metavar="DEG", help="right ascension (ICRS, degrees)")
    what.add_argument("--image", metavar="FILE", help="a FITS image to embed and search with")
    what.add_argument(
        "--list", action="store_true", help="list every tile (id, position, zoom, filter)"
    )
    parser.add_argument("--dec", type=float, metavar="DEG", help="declination (ICRS, degrees)")
    parser.add_argument(
        "--cone",
        type=angle,
        metavar="ANGLE",
        help="cone search radius around --ra/--dec, with its unit (e.g. 30arcsec)",
    )
    parser.add_argument("-k", type=int, default=10, help="number of results (default: %(default)s)")
    parser.add_argument(
        "--filter", action="append", default=[], metavar="KEY=VALUE", help="repeatable; see above"
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format")
    parser.add_argument(
        "--json",
        dest="format",
        action="store_const",
        const="json",
        help="print the result as one JSON object on stdout (same as --format json)",
    )
    add_catalogue_version(parser, "--version-number")
    parser.set_defaults(func=run_query)


def parse_filters(items: list[str]) -> dict:
    """``["zoom=2", "filter=F606W,F814W", ...]`` -> keyword filters of ``Catalogue.similar``."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    from catalog import FILTER_KEYS
    from catalog.errors import QueryError

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in FILTER_KEYS:
            msg = f"--filter {item!r} must be KEY=VALUE with KEY one of {list(FILTER_KEYS)}"
            raise QueryError(msg)
        values = [v.strip() for v in value.split(",") if v.strip()]
        if key == "zoom":
            try:
                out[key] = [int(v) for v in values]
            except ValueError:
                msg = f"--filter {item!r}: zoom must be integers, e.g. zoom=1,2"
                raise QueryError(msg) from None
        elif key == "date":
            start, dots, end = value.partition("..")
            if not dots:
                msg = f"--filter {item!r}: give date=START..END (either may be empty)"
                raise QueryError(msg)
            out[key] = (start.strip() or None, end.strip() or None)
        elif key == "region":
            from catalog import to_angle

            try:
                ra_text, dec_text, radius_text = values
                ra, dec = float(ra_text), float(dec_text)
            except ValueError:
                msg = f"--filter {item!r}: give region=RA_DEG,DEC_DEG,RADIUS with the radius's unit, e.g. region=53.16,-27.78,30arcsec"
                raise QueryError(msg) from None
            radius = to_angle(radius_text, what=f"--filter {item!r}: the radius")
            out[key] = (SkyCoord(ra * u.deg, dec * u.deg), radius)
        else:
            out[key] = values if len(values) != 1 else values[0]
    return out


def run_query(args: argparse.Namespace) -> int:
    import warnings

    from astropy import units as u
    from astropy.coordinates import SkyCoord

    from catalog import Catalogue, CatalogWarning, result_table, table_to_bytes
    from catalog.errors import QueryError

    filters = parse_filters(args.filter)
    if args.ra is not None and args.dec is None:
        msg = "--ra needs --dec"
        raise QueryError(msg)
    if args.cone is not None and args.ra is None:
        msg = "--cone needs --ra and --dec"
        raise QueryError(msg)
    cat = Catalogue.open(args.catalogue, version=args.catalogue_version)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CatalogWarning)
        if args.list:
            import numpy as np

            table = result_table(cat.metadata(), np.arange(len(cat)), None, "")
            table.meta.update({"query": "list", **cat._table_info()})
        elif args.cone is not None:
            coord = SkyCoord(args.ra * u.deg, args.dec * u.deg)
            table = cat.cone(coord, args.cone, **filters)
        elif args.ra is not None:
            table = cat.similar(SkyCoord(args.ra * u.deg, args.dec * u.deg), k=args.k, **filters)
        elif args.image is not None:
            table = cat.similar(args.image, k=args.k, **filters)
        else:
            table = cat.similar(args.tile, k=args.k, **filters)
    for w in caught:
        if issubclass(w.category, CatalogWarning):
            print(f"hubcat query: {w.message}", file=sys.stderr)
    if args.format == "table":
        table.pprint(max_lines=-1, max_width=-1)
    else:
        sys.stdout.buffer.write(table_to_bytes(table, args.format))
        sys.stdout.flush()
    return 0
