"""Verifying one tile: its inclusion proof and the re-hash of its own pixels and embedding."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np

from catalog.provenance._common import (
    check_checkpoint,
    check_record,
    get_object,
    provenance_entry,
    stored_leaves,
    tile_sha256,
)
from catalog.provenance._leafshards import HashShards
from catalog.provenance._leaves import (
    LEAF_HASHES_KEY,
    leaf_bytes,
    parse_leaf_lenient,
)
from catalog.provenance._merkle import (
    MerkleTree,
    hash_leaf,
    inclusion_failure,
)
from catalog.provenance._report import (
    InclusionProof,
    VerificationReport,
)
from catalog.provenance.errors import (
    ProvenanceError,
    VerificationError,
)

__all__ = ["verify_tile"]


def _record_at(cat, index: int) -> dict:
    """The catalogue's record of row ``index``, without building every record."""
    records = getattr(cat, "iter_records", None)
    if records is None:
        return cat.records()[index]
    return next(itertools.islice(records(), index, None))


def _vector_at(cat, index: int) -> np.ndarray:
    """Row ``index`` of the stored vectors, read from its segment file alone (bytes as stored)."""
    dim = int(cat.manifest["model"]["dim"])
    for seg in cat.manifest["segments"]:
        shards = seg.get("vector_shards") or [
            {
                "key": seg["vectors_key"],
                "first_row": int(seg.get("first_row", 0)),
                "rows": int(seg["rows"]),
            }
        ]
        for shard in shards:
            first, key = int(shard["first_row"]), shard["key"]
            if first <= index < first + int(shard["rows"]):
                data = cat.store.get_range(key, (index - first) * 4 * dim, 4 * dim)
                if len(data) != 4 * dim:
                    msg = f"{key} is truncated: row {index - first} is incomplete"
                    raise ProvenanceError(msg)
                return np.frombuffer(data, dtype="<f4")
    msg = f"no segment of the manifest holds row {index}"
    raise ProvenanceError(msg)


def verify_tile(cat, tile_id: str, public_key=None) -> InclusionProof:
    """Check one tile's provenance and return its inclusion proof.

    Rebuilds the tile's leaf from the catalogue's record, proves that leaf is in the signed tree
    (checking the checkpoint signature against the published key, or ``public_key``), then
    re-hashes the tile's pixels and its stored embedding against the proven leaf. Reads the
    tile's own data, the leaf hashes (32 bytes per tile) and nothing else of the catalogue.

    Parameters
    ----------
    cat : catalog.Catalogue
    tile_id : str
    public_key : str, path or VerifierKey, optional
        The operator's public key (default: the one the catalogue publishes).

    Returns
    -------
    InclusionProof

    Raises
    ------
    VerificationError
        If anything about the tile, the tree or the signature does not verify (naming it).
    ProvenanceNotFoundError
        If the provenance files are missing.
    catalog.UnknownTileError
        If the catalogue has no such tile.
    """
    index = cat.row_of(tile_id)
    report = VerificationReport(catalogue=str(cat.store.uri))
    prov = provenance_entry(cat)
    cp, _key = check_checkpoint(cat, prov, public_key, report)
    if cp is None:
        report.raise_if_failed()
    if index >= cp.size:
        msg = f"tile {tile_id} is row {index}, beyond the {cp.size} leaves of the signed checkpoint"
        raise VerificationError(msg, [msg])
    shards = (prov.get("files") or {}).get("leaf_shards")
    if shards:  # hashes read by range, shard by shard: never the whole log at once
        tree = HashShards(cat.store, shards, cp.size)
    else:
        hashes_key = (prov.get("files") or {}).get("leaf_hashes") or LEAF_HASHES_KEY
        hashes = get_object(cat.store, hashes_key, "provenance file")[: 32 * cp.size]
        if len(hashes) != 32 * cp.size:
            msg = f"{hashes_key} is truncated: fewer than {cp.size} hashes"
            report.failed("file", hashes_key, msg)
            report.raise_if_failed()
        tree = MerkleTree(hashes)

    # the leaf the catalogue's record gives today, and its place in the signed tree
    leaf = None
    try:
        record = _record_at(cat, index)
        leaf = leaf_bytes(record, index)
    except Exception as exc:  # unreadable metadata: compare with the stored leaf below
        report.failed("tile", tile_id, f"tile {tile_id}: cannot rebuild its record: {exc}")
    path = tree.inclusion_proof(index)
    failure = (
        None if leaf is None else inclusion_failure(hash_leaf(leaf), index, cp.size, path, cp.root)
    )
    if leaf is None or failure:
        # name what differs from the signed leaf (read only now: the leaves file is large)
        signed = stored_leaves(cat, prov, cp.size)[index]
        if leaf is not None:
            check_record(record, signed, index, report)
            if not report.failures:
                report.failed(
                    "tile",
                    tile_id,
                    f"tile {tile_id}: its leaf is not in the signed tree: {failure}",
                )
        leaf = signed
    doc = parse_leaf_lenient(leaf)

    # the tile's bytes against the (proven) leaf
    try:
        vec = _vector_at(cat, index)
    except Exception as exc:
        report.failed("tile", tile_id, f"tile {tile_id}: cannot read its embedding: {exc}")
    else:
        got = hashlib.sha256(vec.tobytes()).hexdigest()
        if got != doc.get("embedding_sha256"):
            report.failed(
                "tile",
                tile_id,
                f"tile {tile_id}: its embedding hashes to {got[:16]}..., its signed leaf says "
                f"{str(doc.get('embedding_sha256'))[:16]}...",
            )
    try:
        pixels = cat.tile(tile_id).pixels
    except Exception as exc:
        report.failed("tile", tile_id, f"tile {tile_id}: cannot read its pixels: {exc}")
    else:
        got = tile_sha256(pixels)
        if got != doc.get("tile_sha256"):
            report.failed(
                "tile",
                tile_id,
                f"tile {tile_id}: its pixels hash to {got[:16]}..., its signed leaf says "
                f"{str(doc.get('tile_sha256'))[:16]}...",
            )
    report.raise_if_failed()
    return InclusionProof(
        tile_id=tile_id,
        leaf_index=index,
        tree_size=cp.size,
        leaf=leaf.decode("utf-8"),
        leaf_hash=hash_leaf(leaf).hex(),
        path=[h.hex() for h in path],
        root=cp.root.hex(),
        checkpoint=cp.text,
    )
