"""``hubcat serve``: the catalogue as an HTTP service; ``hubcat serve keys|usage`` to run it.

``hubcat serve CATALOGUE [--host H] [--port P] [--keys FILE] ...`` serves the API and the page;
``hubcat serve keys add|list|revoke --keys FILE ...`` manages API keys; ``hubcat serve usage
LEDGER`` verifies the usage ledger and sums it per caller.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register", "run_serve"]

_ACTIONS = ("keys", "usage")


def _serve_options(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    d = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    parser.add_argument(
        "--host", default=d("127.0.0.1"), help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=d(8000), help="port (default: 8000)")
    parser.add_argument(
        "--keys",
        type=Path,
        metavar="KEYS_FILE",
        default=d(None),
        help="API key file (hubcat serve keys add)",
    )
    parser.add_argument(
        "--anonymous",
        choices=("off", "read", "all"),
        default=d(None),
        help="what callers without a key may do (default: 'read' with --keys, else 'all')",
    )
    parser.add_argument(
        "--anonymous-rate",
        type=float,
        default=d(5.0),
        metavar="REQ_PER_S",
        help="anonymous rate limit per client address (default: 5)",
    )
    parser.add_argument(
        "--anonymous-daily",
        type=int,
        default=d(2000),
        metavar="UNITS",
        help="anonymous daily quota per client address (default: 2000)",
    )
    parser.add_argument(
        "--usage",
        type=Path,
        metavar="LEDGER",
        default=d(None),
        help="usage ledger file (default: KEYS_FILE.usage.jsonl)",
    )
    parser.add_argument(
        "--signing-key",
        type=Path,
        metavar="FILE",
        default=d(None),
        help="Ed25519 key signing the ledger (default: the operator key)",
    )
    parser.add_argument(
        "--max-upload-mb", type=float, default=d(8.0), help="largest image upload (default: 8 MB)"
    )
    parser.add_argument(
        "--max-radius",
        type=float,
        default=d(1.0),
        metavar="DEG",
        help="largest cone radius (default: 1 deg)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a catalogue over HTTP: search API, IVOA cone search, web page; API keys and usage",
        description=(
            "hubcat serve CATALOGUE: serve the catalogue (folder or s3:// prefix) over HTTP: similar "
            "tiles by id, position or uploaded FITS/PNG image, cone search and IVOA Simple Cone "
            "Search (/scs), cutouts, provenance, and a web page at /. "
            "hubcat serve keys add|list|revoke --keys FILE: manage API keys. "
            "hubcat serve usage LEDGER: verify the signed usage ledger and sum it per caller."
        ),
    )
    parser.add_argument("catalogue", metavar="CATALOGUE | keys | usage")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    _serve_options(parser)
    parser.set_defaults(func=run_serve)


def _keys_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubcat serve keys", description="Manage the service's API keys (stored hashed)."
    )
    sub = parser.add_subparsers(dest="action", metavar="add|list|revoke", required=True)
    add = sub.add_parser("add", help="make a key and print its secret (shown once)")
    add.add_argument("name", help="whom the key is for")
    add.add_argument("--keys", type=Path, required=True, metavar="KEYS_FILE")
    add.add_argument(
        "--scopes",
        default="read",
        help="comma-separated: read, search-by-image, admin (default: read)",
    )
    add.add_argument("--rate", type=float, default=50.0, help="requests per second (default: 50)")
    add.add_argument("--burst", type=int, default=100, help="burst size (default: 100)")
    add.add_argument(
        "--daily", type=int, default=100_000, help="usage units per UTC day (default: 100000)"
    )
    lst = sub.add_parser("list", help="list the keys (never their secrets)")
    lst.add_argument("--keys", type=Path, required=True, metavar="KEYS_FILE")
    lst.add_argument("--json", action="store_true")
    rev = sub.add_parser("revoke", help="revoke a key by its id")
    rev.add_argument("key_id")
    rev.add_argument("--keys", type=Path, required=True, metavar="KEYS_FILE")
    return parser


def _usage_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubcat serve usage",
        description="Verify a usage ledger's chain and signatures; sum it per caller.",
    )
    parser.add_argument("ledger", type=Path, metavar="LEDGER")
    parser.add_argument("--public-key", metavar="FILE", help="the operator's public key to trust")
    parser.add_argument("--day", metavar="YYYY-MM-DD", help="only this UTC day")
    parser.add_argument("--caller", help="only this caller (key:<id> or anon:<address>)")
    parser.add_argument("--json", action="store_true")
    return parser


def _run_keys(argv: list[str]) -> int:
    from pipeline.serve import KeyStore

    args = _keys_parser().parse_args(argv)
    store = KeyStore(args.keys)
    if args.action == "add":
        scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
        key, secret = store.add(
            args.name, scopes, rate=args.rate, burst=args.burst, daily=args.daily
        )
        print(
            f"key id   {key.key_id}  ({key.name}; scopes {','.join(key.scopes)}; {key.rate:g} req/s, burst {key.burst}, {key.daily} units/day)"
        )
        print(f"secret   {secret}")
        print(
            "         (shown once: the key file keeps only its sha256; send it as 'X-API-Key: <secret>')"
        )
        return 0
    if args.action == "list":
        keys = store.keys()
        if args.json:
            print(json.dumps([k.public() for k in keys], indent=1))
            return 0
        if not keys:
            print(f"no keys in {args.keys}")
        for k in keys:
            state = f"revoked {k.revoked}" if k.revoked else "valid"
            print(
                f"{k.key_id}  {k.name:<20} {','.join(k.scopes):<28} {k.rate:g} req/s  {k.daily} units/day  made {k.created}  {state}"
            )
        return 0
    key = store.revoke(args.key_id)
    print(f"revoked {key.key_id} ({key.name}) at {key.revoked}")
    return 0


def _run_usage(argv: list[str]) -> int:
    from pipeline.serve import read_ledger

    args = _usage_parser().parse_args(argv)
    report = read_ledger(args.ledger, args.public_key, day=args.day, caller=args.caller)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return 0
    trusted = (
        "the trusted key"
        if args.public_key
        else "the key in its header (pass --public-key to check whose it is)"
    )
    print(
        f"{report.path}: {report.entries} entries, chain and signatures verified with {trusted}: {report.key}"
    )
    for usage in sorted(report.callers.values(), key=lambda c: -c.units):
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(usage.by_kind.items()))
        print(
            f"  {usage.caller:<22} {usage.name:<16} {usage.requests:>7} requests {usage.units:>8} units  ({kinds})  {usage.first} .. {usage.last}"
        )
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """Dispatch ``hubcat serve`` to the service, ``keys`` or ``usage``."""
    if args.catalogue == "keys":
        return _run_keys(args.rest)
    if args.catalogue == "usage":
        return _run_usage(args.rest)
    if args.rest:  # options after CATALOGUE
        again = argparse.ArgumentParser(prog=f"hubcat serve {args.catalogue}")
        _serve_options(again, defaults=False)
        again.parse_args(args.rest, namespace=args)
    from pipeline.serve import ServeConfig, open_service, run_server

    anonymous = args.anonymous or ("read" if args.keys is not None else "all")
    if anonymous == "all" and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"hubcat serve: warning: anonymous callers may search by image and the service listens on {args.host}; give --keys and --anonymous read|off for a public service",
            file=sys.stderr,
        )
    config = ServeConfig(
        anonymous=anonymous,
        anonymous_rate=args.anonymous_rate,
        anonymous_daily=args.anonymous_daily,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_radius_deg=args.max_radius,
    )
    app = open_service(
        args.catalogue,
        keys=args.keys,
        usage=args.usage,
        signing_key=args.signing_key,
        config=config,
    )
    run_server(app, host=args.host, port=args.port)
    return 0
