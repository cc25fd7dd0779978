"""Provenance leaves: one canonical JSON document (RFC 8785, JCS) per catalogue tile.

Why JCS rather than deterministic CBOR (RFC 8949 section 4.2): a leaf is something a user
reads. A JCS leaf is plain UTF-8 JSON that any JSON tool parses and any text viewer shows, so a
user can check by eye what was signed; it needs no CBOR library (none ships with Python), and
the canonical form is easy to re-derive independently (sorted keys, no whitespace, ECMAScript
number formatting). A record is made only of strings, integers and lists, where JCS is exact.
Leaves are stored one per line in ``provenance/leaves.jsonl``: JCS never emits a raw newline, so
the line *is* the leaf, byte for byte.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import rfc8785

from catalog.provenance._checkpoint import Checkpoint
from catalog.provenance._keys import SigningKey, load_signing_key
from catalog.provenance._leafshards import (
    HASH_SHARDS_PREFIX,
    LEAF_SHARDS_PREFIX,
    HashShards,
    read_shard_leaves,
    write_leaf_shards,
)
from catalog.provenance._merkle import consistency_failure
from catalog.provenance._record import OPTIONAL_KEYS, RECORD_KEYS
from catalog.provenance.errors import ProvenanceError

if TYPE_CHECKING:
    from hubcat.storage import ObjectStore

log = logging.getLogger("catalog.provenance")

__all__ = [
    "LEAF_SCHEMA",
    "OPTIONAL_KEYS",
    "RECORD_KEYS",
    "canonical_json",
    "leaf_bytes",
    "parse_leaf",
]

#: Schema version written into every leaf (key ``"schema"``).
LEAF_SCHEMA = "hubcat.leaf/1"

_SHA256_KEYS = ("source_sha256", "tile_sha256", "weights_sha256", "embedding_sha256")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_SAFE_INT = 2**53 - 1


# --------------------------------------------------------------------------- RFC 8785


def _json_value(value: object, path: str) -> object:
    """``value`` as plain JSON types, checked, so that errors name the offending path."""
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            msg = f"{path}: string {value!r} holds a lone surrogate, which JSON (RFC 8785) cannot encode"
            raise ProvenanceError(msg)
        return value
    if hasattr(value, "tolist") and not isinstance(value, bytes | bytearray):
        value = value.tolist()  # NumPy scalars and arrays
        if value is None or isinstance(value, bool | str):
            return _json_value(value, path)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
        if abs(number) > _MAX_SAFE_INT:
            msg = (
                f"{path} = {number} is outside the integers JSON represents exactly "
                f"(|n| <= 2**53 - 1, RFC 8785 / I-JSON); store it as a string"
            )
            raise ProvenanceError(msg)
        return number
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        if not math.isfinite(number):
            msg = f"{path} = {number} is not a finite number; JSON (RFC 8785) cannot encode it"
            raise ProvenanceError(msg)
        return number
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                msg = f"{path} has a non-string key {key!r}; JSON object keys must be strings"
                raise ProvenanceError(msg)
            out[_json_value(key, f"{path} key")] = _json_value(item, f"{path}.{key}")
        return out
    if isinstance(value, Sequence | Iterable) and not isinstance(value, bytes | bytearray):
        return [_json_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    msg = f"{path} is a {type(value).__name__}, which has no JSON form; use str, int or list"
    raise ProvenanceError(msg)


def canonical_json(value: object) -> bytes:
    """RFC 8785 (JSON Canonicalization Scheme) serialisation of ``value`` as UTF-8 bytes.

    Objects have their keys sorted by UTF-16 code units, there is no whitespace, strings use the
    minimal JSON escapes and numbers the ECMAScript shortest form. The serialisation is the
    ``rfc8785`` package's; this function checks the value first so that an error names the
    offending key.

    Parameters
    ----------
    value : object
        ``None``, bool, str, int, float, mappings with str keys and sequences thereof
        (NumPy scalars and arrays are accepted as numbers and sequences).

    Returns
    -------
    bytes

    Raises
    ------
    ProvenanceError
        For a value with no JSON form (bytes, NaN, an integer beyond 2**53 - 1, a lone
        surrogate, a non-string key).
    """
    try:
        return rfc8785.dumps(value)  # plain JSON types: the library alone
    except rfc8785.CanonicalizationError:
        pass
    # NumPy values, or something JSON cannot hold: convert and check, naming the bad key
    return rfc8785.dumps(_json_value(value, "value"))


# --------------------------------------------------------------------------- leaves


def _plain(value: object) -> object:
    """NumPy scalars and arrays to Python ints, floats and lists."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return value.tolist()
    return value


def _check_record(record: Mapping[str, object], position: int) -> dict:
    if not isinstance(record, Mapping):
        msg = f"record {position} is a {type(record).__name__}, not a dict of the tile's provenance"
        raise ProvenanceError(msg)
    tile = record.get("tile_id", f"#{position}")
    keys = set(record)
    missing = [k for k in RECORD_KEYS if k not in keys]
    extra = sorted(keys - set(RECORD_KEYS) - set(OPTIONAL_KEYS))
    if missing or extra:
        msg = (
            f"record of tile {tile!r} (position {position}) has the wrong keys: missing {missing}, "
            f"unexpected {extra}; a record has exactly {list(RECORD_KEYS)} "
            f"(and optionally {list(OPTIONAL_KEYS)})"
        )
        raise ProvenanceError(msg)
    clean = {k: _plain(record[k]) for k in RECORD_KEYS}
    problems = []
    if "supersedes" in keys:
        old = _plain(record["supersedes"])
        if isinstance(old, bool) or not isinstance(old, int) or not 0 <= old < max(position, 1):
            problems.append(
                f"supersedes={old!r} must be the index of an earlier leaf (below {position})"
            )
        clean["supersedes"] = old
    if "numerical_class" in keys:
        cls = _plain(record["numerical_class"])
        if not isinstance(cls, str) or not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", cls):
            problems.append(f"numerical_class={cls!r} must be like 'openvino-fp32'")
        clean["numerical_class"] = cls
    for k in ("tile_id", "source", "tiling_digest", "model", "preprocessing_digest"):
        if not isinstance(clean[k], str) or not clean[k]:
            problems.append(f"{k}={clean[k]!r} must be a non-empty string")
    if not isinstance(clean["software_version"], str):
        problems.append(f"software_version={clean['software_version']!r} must be a string")
    for k in _SHA256_KEYS:
        if not isinstance(clean[k], str) or not _HEX64.fullmatch(clean[k]):
            problems.append(f"{k}={clean[k]!r} must be 64 lowercase hex digits (a sha256)")
    if not isinstance(clean["hdu"], int | str) or isinstance(clean["hdu"], bool):
        problems.append(f"hdu={clean['hdu']!r} must be an HDU index (int) or name (str)")
    if isinstance(clean["zoom"], bool) or not isinstance(clean["zoom"], int) or clean["zoom"] < 1:
        problems.append(f"zoom={clean['zoom']!r} must be a positive int (the binning factor)")
    box = clean["box"]
    if (
        not isinstance(box, list | tuple)
        or len(box) != 4
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in box)
    ):
        problems.append(f"box={box!r} must be [x0, y0, width, height], four ints (source pixels)")
    else:
        clean["box"] = list(box)
    if clean["embedding_dtype"] != "<f4":
        problems.append(f"embedding_dtype={clean['embedding_dtype']!r} must be '<f4'")
    shape = clean["embedding_shape"]
    if (
        not isinstance(shape, list | tuple)
        or len(shape) != 1
        or not isinstance(shape[0], int)
        or shape[0] < 1
    ):
        problems.append(f"embedding_shape={shape!r} must be [D], one positive int")
    else:
        clean["embedding_shape"] = list(shape)
    vols = clean["volunteers"]
    if not isinstance(vols, list | tuple) or not all(isinstance(v, str) for v in vols):
        problems.append(f"volunteers={vols!r} must be a list of str")
    elif list(vols) != sorted(vols):
        problems.append(f"volunteers={list(vols)!r} must be sorted")
    else:
        clean["volunteers"] = list(vols)
    if not problems:
        numbers_ = [clean["zoom"], *clean["box"], *clean["embedding_shape"]]
        if isinstance(clean["hdu"], int):
            numbers_.append(clean["hdu"])
        if any(abs(v) > _MAX_SAFE_INT for v in numbers_):
            problems.append("an integer is beyond 2**53 - 1, which JSON does not represent exactly")
    if problems:
        msg = f"record of tile {tile!r} (position {position}) is not valid: " + "; ".join(problems)
        raise ProvenanceError(msg)
    return clean


def leaf_bytes(record: Mapping[str, object], position: int = 0) -> bytes:
    """The Merkle leaf of one tile: the RFC 8785 JSON of its record plus the schema version.

    Parameters
    ----------
    record : mapping
        The tile's record, with exactly the keys :data:`RECORD_KEYS`.
    position : int
        Its position in the log, used only in error messages.

    Returns
    -------
    bytes
        UTF-8 JSON, no newline inside.

    Raises
    ------
    ProvenanceError
        If a key is missing or extra, or a value has the wrong type or form (naming the tile).
    """
    clean = _check_record(record, position)
    clean["schema"] = LEAF_SCHEMA
    # A checked record holds only ASCII keys, str, ints within 2**53 and lists of those: for
    # such values RFC 8785 and json.dumps(sort_keys, no spaces, no ASCII escaping) produce the
    # same bytes (same key order, same string escapes, integers in plain decimal). The generic
    # encoder is ten times slower; the tests check the two agree.
    try:
        return json.dumps(
            clean, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except UnicodeEncodeError:
        return canonical_json(clean)  # raises, naming the lone surrogate


def parse_leaf(leaf: bytes) -> dict:
    """Decode a stored leaf back into its record (with ``"schema"``).

    Parameters
    ----------
    leaf : bytes
        One leaf as stored in the log: the RFC 8785 canonical JSON (UTF-8) of a tile's record.

    Returns
    -------
    dict
        The record's fields, as :meth:`TileRecord.to_dict` gives them, plus ``"schema"``.

    Raises
    ------
    ProvenanceError
        If the bytes are not JSON, not canonical, or of an unknown schema.
    """
    try:
        value = json.loads(leaf.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        msg = f"leaf {leaf[:60]!r}... is not UTF-8 JSON: {exc}"
        raise ProvenanceError(msg) from None
    if not isinstance(value, dict) or value.get("schema") != LEAF_SCHEMA:
        schema = value.get("schema") if isinstance(value, dict) else None
        msg = f"leaf has schema {schema!r}; this release reads {LEAF_SCHEMA!r}"
        raise ProvenanceError(msg)
    if canonical_json(value) != leaf:
        msg = f"leaf of tile {value.get('tile_id')!r} is not in canonical (RFC 8785) form"
        raise ProvenanceError(msg)
    return value


# --------------------------------------------------------------------------- the log's files

#: Where the log lives inside a catalogue's object store.
PREFIX = "provenance/"
LEAVES_KEY = PREFIX + "leaves.jsonl"
LEAF_HASHES_KEY = PREFIX + "leaf_hashes.bin"
CHECKPOINT_KEY = PREFIX + "checkpoint"
PUBLIC_KEY_KEY = PREFIX + "public_key"
FORMAT = "hubcat.provenance/1"
#: Leaves per leaf shard unless told otherwise (``CatalogConfig.leaf_shard_rows``).
DEFAULT_SHARD_LEAVES = 1 << 20


def checkpoint_history_key(size: int) -> str:
    """Key of the checkpoint of the version with ``size`` leaves."""
    return f"{PREFIX}checkpoints/{size}"


def consistency_key(old_size: int, new_size: int) -> str:
    """Key of the consistency proof between two versions."""
    return f"{PREFIX}consistency/{old_size}-{new_size}.json"


def encode_leaves(leaves: Sequence[bytes]) -> bytes:
    """The bytes of ``leaves.jsonl``: each leaf followed by a newline."""
    return b"".join(leaf + b"\n" for leaf in leaves)


def decode_leaves(data: bytes, source: str = LEAVES_KEY) -> list[bytes]:
    """Split ``leaves.jsonl`` back into leaves.

    Raises
    ------
    ProvenanceError
        If the file does not end with a newline (truncated).
    """
    if not data:
        return []
    if not data.endswith(b"\n"):
        msg = f"{source} does not end with a newline: the file is truncated"
        raise ProvenanceError(msg)
    return data[:-1].split(b"\n")


def _previous_state(previous: Mapping[str, object]) -> tuple[int, bytes, str | None]:
    if not isinstance(previous, Mapping):
        msg = f"previous must be the previous version's provenance dict; got {type(previous).__name__}"
        raise ProvenanceError(msg)
    size = previous.get("tree_size")
    root = previous.get("root")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        msg = f"previous provenance has tree_size={size!r}; expected a non-negative int"
        raise ProvenanceError(msg)
    try:
        root_bytes = bytes.fromhex(root) if isinstance(root, str) else b""
    except ValueError:
        root_bytes = b""
    if len(root_bytes) != 32:
        msg = f"previous provenance has root={root!r}; expected 64 hex digits"
        raise ProvenanceError(msg)
    origin = previous.get("origin")
    return size, root_bytes, origin if isinstance(origin, str) else None


def _first_changed(store, previous: Mapping[str, object], shards: Sequence[Mapping]) -> str:
    """Name the first old leaf that differs, when the previous leaves can be read."""
    files = previous.get("files")
    if not isinstance(files, Mapping):
        return ""
    size = int(previous.get("tree_size") or 0)
    try:
        if files.get("leaf_shards"):
            old: Iterable[bytes] = read_shard_leaves(store, files["leaf_shards"], size)
        else:
            key = files.get("leaves")
            old = decode_leaves(store.get(key), key) if isinstance(key, str) else []
        new = read_shard_leaves(store, shards, size)
        for i, (a, b) in enumerate(zip(old, new, strict=False)):
            if a != b:
                tile = parse_leaf_lenient(a).get("tile_id", f"#{i}")
                return f"; the first difference is leaf {i} (tile {tile!r})"
    except Exception:  # the old leaves are gone or unreadable: nothing more to name
        return ""
    return ""


def parse_leaf_lenient(leaf: bytes) -> dict:
    """Decode a leaf as JSON without any check; ``{}`` if it is not a JSON object."""
    try:
        value = json.loads(leaf.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def build_provenance(
    records: Iterable[Mapping[str, object]],
    store: ObjectStore,
    signing_key: SigningKey | str | os.PathLike[str] | None = None,
    previous: Mapping[str, object] | None = None,
    *,
    origin: str | None = None,
    shard_leaves: int = DEFAULT_SHARD_LEAVES,
) -> dict:
    """Write the Merkle log of a catalogue version and return its manifest entry.

    Parameters
    ----------
    records : iterable of dict
        One record per tile, in leaf order, with exactly the keys :data:`RECORD_KEYS`.
        A new version lists the previous version's records first, unchanged.
    store : hubcat.storage.ObjectStore
        The catalogue's store; files go under ``provenance/``.
    signing_key : SigningKey, str, path-like or None
        The operator's Ed25519 key (or its file). ``None`` writes an unsigned checkpoint.
    previous : dict or None
        The previous version's provenance dict (``manifest["provenance"]``); the new log must
        extend it, and the consistency proof between the two is written and returned.
    origin : str or None
        Checkpoint origin line (the log's identity). Default: the previous version's origin,
        else the signing key's name (C2SP tlog-checkpoint: they should match), or
        ``"hubcat/unsigned"`` without a key.
    shard_leaves : int
        Largest number of leaves in one leaf shard (``provenance/leaves/<first>-<end>.jsonl``
        with its leaf hashes in ``provenance/leaf_hashes/``); the tree is computed shard by
        shard without holding every leaf (see :mod:`catalog.provenance._leafshards`).

    Returns
    -------
    dict
        JSON-ready: ``format``, ``leaf_schema``, ``leaf_encoding``, ``tree_size``, ``root``
        (hex), ``origin``, ``checkpoint`` (note text), ``signed``, ``public_key`` (verifier key
        text or None), ``files`` (keys in ``store``), ``previous`` (size and root or None),
        ``consistency_proof`` (hex list or None).

    Raises
    ------
    ProvenanceError
        If a record is invalid (naming the tile), two records share a tile_id without the later
        one superseding the earlier, or the records do not extend ``previous`` (old rows
        changed, removed or reordered).
    """
    t0 = time.perf_counter()
    seen: dict[str, int] = {}

    def checked() -> Iterator[bytes]:
        for i, record in enumerate(records):
            tile = str(record["tile_id"])
            heir_of = record.get("supersedes")
            if tile in seen and heir_of != seen[tile]:
                msg = (
                    f"tile_id {tile!r} appears twice (records {seen[tile]} and {i}) and the second "
                    f"does not supersede the first (supersedes={heir_of!r}); one live leaf per tile"
                )
                raise ProvenanceError(msg)
            if tile not in seen and heir_of is not None:
                msg = f"record {i} of tile {tile!r} supersedes leaf {heir_of}, which is not that tile's"
                raise ProvenanceError(msg)
            seen[tile] = i
            yield leaf_bytes(record, i)

    old_files = previous.get("files") if isinstance(previous, Mapping) else None
    keep = {
        str(sh["key"]): str(sh["sha256"])
        for sh in (old_files.get("leaf_shards") or [] if isinstance(old_files, Mapping) else [])
    }
    shards, tree = write_leaf_shards(store, checked(), shard_leaves, keep)
    size, root = tree.size, tree.root

    key = signing_key
    if key is not None and not isinstance(key, SigningKey):
        key = load_signing_key(Path(key))

    proof_hex = None
    prev_entry = None
    prev_origin = None
    if previous is not None:
        old_size, old_root, prev_origin = _previous_state(previous)
        if old_size > size:
            msg = (
                f"the new version has {size} tiles but the previous one had {old_size}; "
                "a new catalogue version may only append tiles"
            )
            raise ProvenanceError(msg)
        if old_size:
            proof = HashShards(store, shards, size).consistency_proof(old_size)
            failure = consistency_failure(old_size, size, old_root, root, proof)
            if failure:
                msg = (
                    f"the first {old_size} records do not reproduce the previous version's root "
                    f"{old_root.hex()}: old rows were changed, removed or reordered"
                    f"{_first_changed(store, previous, shards)}. A new version must list the "
                    "previous records first, unchanged, and only append"
                )
                raise ProvenanceError(msg)
            proof_hex = [p.hex() for p in proof]
        prev_entry = {"tree_size": old_size, "root": old_root.hex()}

    if origin is None:
        # C2SP tlog-checkpoint: the origin SHOULD match the key name. A log keeps the origin it
        # was started with (catalogues begun under the older "hubcat/<key name>" keep it, so
        # their consistency proofs and signatures still verify).
        origin = prev_origin or (key.name if key else "hubcat/unsigned")
    checkpoint = Checkpoint(origin, size, root)
    if key is not None:
        checkpoint = checkpoint.signed(key)
    text = checkpoint.text

    files = {
        "leaves": LEAF_SHARDS_PREFIX,
        "leaf_hashes": HASH_SHARDS_PREFIX,
        "leaf_shards": shards,
        "checkpoint": CHECKPOINT_KEY,
        "checkpoint_history": checkpoint_history_key(size),
        "public_key": PUBLIC_KEY_KEY if key is not None else None,
        "consistency": None,
    }
    if key is not None:
        store.put(PUBLIC_KEY_KEY, (key.verifier.text + "\n").encode())
    if prev_entry is not None and proof_hex is not None:
        files["consistency"] = consistency_key(prev_entry["tree_size"], size)
        doc = {
            "old_size": prev_entry["tree_size"],
            "new_size": size,
            "old_root": prev_entry["root"],
            "new_root": root.hex(),
            "proof": proof_hex,
        }
        store.put(files["consistency"], json.dumps(doc, indent=1).encode())
    store.put(checkpoint_history_key(size), text.encode())
    store.put(CHECKPOINT_KEY, text.encode())
    log.info(
        "provenance of %s: %d leaves, root %s, %s, in %.1f s",
        store.uri,
        size,
        root.hex(),
        f"signed by {key.verifier.label}" if key is not None else "unsigned",
        time.perf_counter() - t0,
    )
    return {
        "format": FORMAT,
        "leaf_schema": LEAF_SCHEMA,
        "leaf_encoding": "RFC 8785 (JCS) UTF-8 JSON, one leaf per line of each leaf shard",
        "tree": "RFC 6962 / RFC 9162, SHA-256",
        "tree_size": size,
        "root": root.hex(),
        "origin": origin,
        "checkpoint": text,
        "signed": key is not None,
        "key_name": key.name if key is not None else None,
        "public_key": key.verifier.text if key is not None else None,
        "files": files,
        "previous": prev_entry,
        "consistency_proof": proof_hex,
    }
