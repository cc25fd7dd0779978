"""Reading what verification checks: the provenance entry, stored leaves, keys, checkpoints."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from catalog.provenance._checkpoint import Checkpoint
from catalog.provenance._keys import VerifierKey, load_verifier_key
from catalog.provenance._leafshards import read_shard_leaves
from catalog.provenance._leaves import (
    LEAVES_KEY,
    PUBLIC_KEY_KEY,
    checkpoint_history_key,
    decode_leaves,
    leaf_bytes,
    parse_leaf_lenient,
)
from catalog.provenance._report import (
    VerificationReport,
)
from catalog.provenance.errors import (
    CheckpointError,
    ProvenanceError,
    ProvenanceNotFoundError,
    SigningKeyError,
)

__all__ = [
    "check_checkpoint",
    "check_record",
    "get_object",
    "parse_against",
    "provenance_entry",
    "stored_leaves",
    "tile_sha256",
    "trusted_key",
]

# --------------------------------------------------------------------------- reading


def provenance_entry(cat) -> dict:
    prov = cat.manifest.get("provenance")
    if not isinstance(prov, Mapping) or "checkpoint" not in prov:
        msg = (
            f"catalogue {cat.store.uri} has no provenance record in manifest.json; it was built "
            "without one (or the manifest was edited). Rebuild it with `hubcat run`"
        )
        raise ProvenanceNotFoundError(msg)
    return dict(prov)


def get_object(store, key: str, what: str) -> bytes:
    from hubcat.errors import StoreNotFoundError

    try:
        return store.get(key)
    except StoreNotFoundError:
        msg = (
            f"{what} {key} is missing from catalogue {store.uri}; the catalogue was copied "
            "without its provenance/ folder. Copy it whole, or rebuild it"
        )
        raise ProvenanceNotFoundError(msg) from None


def stored_leaves(
    cat, prov: Mapping, size: int, damaged: list[tuple[str, str]] | None = None
) -> list[bytes]:
    """The first ``size`` signed leaves: from the leaf shards, or an older single leaves file.

    ``damaged`` collects ``(key, reason)`` of shards whose sha256 differs from the manifest
    (see :func:`catalog.provenance._leafshards.read_shard_leaves`).
    """
    files = prov.get("files") or {}
    if files.get("leaf_shards"):
        return list(read_shard_leaves(cat.store, files["leaf_shards"], size, damaged))
    key = files.get("leaves") or LEAVES_KEY
    leaves = decode_leaves(get_object(cat.store, key, "provenance file"), key)
    if len(leaves) < size:
        msg = f"{key} of {cat.store.uri} holds {len(leaves)} leaves; the checkpoint says {size}"
        raise ProvenanceError(msg)
    return leaves[:size]


def trusted_key(cat, prov: Mapping, public_key, report: VerificationReport | None):
    """The key to check signatures with, and whether the user pinned it."""
    if public_key is not None:
        return load_verifier_key(public_key), True
    text = prov.get("public_key")
    if not text:
        if cat.store.exists(PUBLIC_KEY_KEY):
            text = cat.store.get(PUBLIC_KEY_KEY).decode("utf-8", "replace")
        else:
            return None, False
    try:
        key = VerifierKey.parse(text, source=f"public key in the manifest of {cat.store.uri}")
    except SigningKeyError as exc:
        if report is None:
            raise
        report.failed("manifest", "provenance.public_key", str(exc))
        return None, False
    if report is not None and cat.store.exists(PUBLIC_KEY_KEY):
        published = cat.store.get(PUBLIC_KEY_KEY).decode("utf-8", "replace").strip()
        if published != key.text:
            report.failed(
                "file",
                PUBLIC_KEY_KEY,
                f"{PUBLIC_KEY_KEY} ({published[:40]}...) differs from the manifest's public key",
            )
    return key, False


def parse_against(against) -> tuple[Checkpoint, str]:
    if isinstance(against, Checkpoint):
        return against, "the given checkpoint"
    text = str(against)
    if "\n" not in text:
        path = Path(text).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            msg = f"old checkpoint {path} does not exist; give the file of an earlier checkpoint"
            raise ProvenanceNotFoundError(msg) from None
        except (OSError, UnicodeDecodeError) as exc:
            msg = f"cannot read old checkpoint {path}: {exc}"
            raise CheckpointError(msg) from None
        return Checkpoint.parse(text, source=f"old checkpoint {path}"), str(path)
    return Checkpoint.parse(text, source="old checkpoint"), "the old checkpoint"


# --------------------------------------------------------------------------- the checks


def check_checkpoint(cat, prov, public_key, report) -> tuple[Checkpoint | None, VerifierKey | None]:
    try:
        cp = Checkpoint.parse(prov["checkpoint"], source="checkpoint in manifest.json")
    except CheckpointError as exc:
        report.failed("checkpoint", "manifest.json", str(exc))
        return None, None
    report.tree_size, report.root = cp.size, cp.root.hex()
    key, pinned = trusted_key(cat, prov, public_key, report)
    if not cp.signatures:
        if pinned:
            report.failed(
                "signature", "checkpoint", f"the checkpoint is not signed, so not by {key.label}"
            )
        else:
            report.warnings.append(
                "the checkpoint is not signed: integrity was checked, authorship was not"
            )
    elif key is None:
        report.failed(
            "signature",
            "checkpoint",
            "the checkpoint is signed but the catalogue publishes no usable public key; "
            "pass the operator's key with --public-key",
        )
    else:
        failure = cp.signature_failure(key)
        if failure:
            report.failed("signature", "checkpoint", f"signature: {failure}")
        else:
            report.key = key.label
            report.checks.append(f"checkpoint signature by {key.label}")
            if not pinned:
                report.warnings.append(
                    f"checked against the key the catalogue publishes ({key.label}); "
                    "pass --public-key to pin the operator's key"
                )
    # the manifest's own copies of size and root must be those of the signed checkpoint
    for name, value, want in (
        ("tree_size", prov.get("tree_size"), cp.size),
        ("root", prov.get("root"), cp.root.hex()),
    ):
        if value != want:
            report.failed(
                "manifest",
                f"provenance.{name}",
                f"manifest.json provenance.{name} is {value!r} but the signed checkpoint says "
                f"{want!r}",
            )
    versions = cat.manifest.get("versions") or []
    if versions and versions[-1].get("merkle_root") not in (None, cp.root.hex()):
        report.failed(
            "manifest",
            "versions",
            f"manifest.json versions[-1].merkle_root is {versions[-1].get('merkle_root')!r} but "
            f"the signed checkpoint says {cp.root.hex()!r}",
        )
    history = checkpoint_history_key(cp.size)
    if not cat.store.exists(history):
        report.failed("file", history, f"{history} is missing from the catalogue")
    elif cat.store.get(history).decode("utf-8", "replace") != prov["checkpoint"]:
        report.failed("file", history, f"{history} differs from the checkpoint in manifest.json")
    return cp, key


def check_record(record: Mapping, leaf: bytes, index: int, report: VerificationReport) -> None:
    tile = str(record.get("tile_id"))
    try:
        mine = leaf_bytes(record, index)
    except ProvenanceError as exc:
        report.failed("tile", tile, str(exc))
        return
    if mine != leaf:
        doc, signed = json.loads(mine), parse_leaf_lenient(leaf)
        fields = sorted(k for k in set(doc) | set(signed) if doc.get(k) != signed.get(k))
        shown = ", ".join(f"{k}={doc.get(k)!r} (signed {signed.get(k)!r})" for k in fields)
        report.failed(
            "tile",
            tile,
            f"tile {tile} (leaf {index}): its record differs from its signed leaf: {shown}",
        )


def tile_sha256(tile: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(tile, dtype="<f4").tobytes()).hexdigest()
