"""``hubcat keygen``: make the operator's Ed25519 key pair that signs catalogue checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run_keygen"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "keygen",
        help="make an Ed25519 key pair to sign catalogue checkpoints",
        description=(
            "Make an Ed25519 signing key (DIR/hubcat.key, readable by you only) and its public "
            "key (DIR/hubcat.key.pub) in the C2SP signed-note formats. Sign catalogues with "
            "`hubcat run ... --signing-key DIR/hubcat.key`; publish the .pub file so that users "
            "can run `hubcat verify CATALOGUE --public-key hubcat.key.pub`."
        ),
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        help="folder of the key pair (default: the folder of $HUBCAT_SIGNING_KEY or ~/.hubcat)",
    )
    parser.add_argument(
        "--name",
        default="hubcat",
        help=(
            "key name written on signature lines, and the checkpoint origin of the catalogues it "
            "starts: a schema-less URL that names your log, e.g. example.org/hubcat (default: hubcat)"
        ),
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing key pair (the old one is lost)"
    )
    parser.set_defaults(func=run_keygen)


def run_keygen(args: argparse.Namespace) -> int:
    """Write the key pair; print where it is and the public key."""
    from catalog.provenance import default_key_path, generate_signing_key, write_key_pair

    default = default_key_path()
    path = (args.out.expanduser() / default.name) if args.out else default
    key = generate_signing_key(args.name)
    pub = write_key_pair(key, path, overwrite=args.force)
    print(f"signing key  {path}  (secret: keep it, never publish it)")
    print(f"public key   {pub}")
    print(f"             {key.verifier.text}")
    print(f"sign with    hubcat run SOURCE... --out CATALOGUE --signing-key {path}")
    print(f"verify with  hubcat verify CATALOGUE --public-key {pub}")
    return 0
