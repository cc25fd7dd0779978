"""Verifying a catalogue's provenance with nothing but the catalogue and the public key.

:func:`verify_catalogue` re-hashes every stored tile and embedding, compares every metadata
value that is part of a leaf with the signed leaf, rebuilds the Merkle root, checks the
checkpoint's signature, and optionally proves one tile's inclusion and the consistency with an
older checkpoint. It names exactly which tile or file fails. :func:`verify_tile` does the same for
one tile and returns its inclusion proof. Neither needs the operator's private key.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Mapping

import numpy as np

from catalog.provenance._checkpoint import Checkpoint
from catalog.provenance._common import (
    check_checkpoint,
    check_record,
    get_object,
    parse_against,
    provenance_entry,
    stored_leaves,
    tile_sha256,
)
from catalog.provenance._keys import VerifierKey
from catalog.provenance._leaves import (
    LEAF_HASHES_KEY,
    LEAVES_KEY,
    parse_leaf_lenient,
)
from catalog.provenance._merkle import (
    MerkleTree,
    consistency_failure,
    leaf_hashes,
)
from catalog.provenance._record import METADATA_KEYS
from catalog.provenance._report import (
    ConsistencyCheck,
    InclusionProof,
    VerificationReport,
)
from catalog.provenance.errors import (
    ProvenanceError,
)
from hubcat.errors import StoreNotFoundError

__all__ = [
    "ConsistencyCheck",
    "InclusionProof",
    "VerificationReport",
    "verify_catalogue",
]


def _segments(cat, report) -> tuple[list, list[np.ndarray]]:
    """Raw metadata rows and vectors of every segment, checked against the manifest's sha256."""
    import pandas as pd

    metas, vectors = [], []
    dim = int(cat.manifest["model"]["dim"])
    for seg in cat.manifest["segments"]:
        if "metadata_shards" in seg:  # HEALPix-sorted shards: back in leaf order below
            objects = [("metadata", s["key"], s["sha256"]) for s in seg["metadata_shards"]]
        else:
            objects = [("metadata", seg["metadata_key"], seg["metadata_sha256"])]
        objects += [("vectors", s["key"], s["sha256"]) for s in _vector_shards(seg)]
        first_meta = len(metas)
        for what, key, digest in objects:
            if what == "metadata" and not cat.store.exists(key):
                report.failed(
                    "file", key, f"metadata shard {key} named by manifest.json is missing"
                )
                continue
            if what == "vectors" and not cat.store.exists(key):
                report.failed("file", key, f"vector shard {key} named by manifest.json is missing")
                rows = int(next(s for s in _vector_shards(seg) if s["key"] == key)["rows"])
                vectors.append(np.full((rows, dim), np.nan, dtype="<f4"))
                continue
            data = get_object(cat.store, key, f"catalogue {what} file")
            got = hashlib.sha256(data).hexdigest()
            if got != digest:
                report.failed(
                    "file",
                    key,
                    f"{key} hashes to {got[:16]}..., manifest.json records {digest[:16]}...: "
                    "the file was changed after the catalogue was built",
                )
            if what == "metadata":
                try:
                    frame = pd.read_parquet(io.BytesIO(data))
                except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
                    report.failed("file", key, f"{key} is not a readable parquet file: {exc}")
                    continue
                frame["_file"] = key
                frame["_row"] = np.arange(len(frame))
                metas.append(frame)
            else:
                if len(data) % (4 * dim):
                    report.failed("file", key, f"{key} is not a whole number of {dim}-d vectors")
                    data = data[: len(data) - len(data) % (4 * dim)]
                vectors.append(np.frombuffer(data, dtype="<f4").reshape(-1, dim))
        if "metadata_shards" in seg and len(metas) > first_meta:
            part = pd.concat(metas[first_meta:], ignore_index=True)
            if "leaf_index" in part.columns:
                part = part.sort_values("leaf_index", kind="stable").reset_index(drop=True)
            metas[first_meta:] = [part]
    _check_index_objects(cat, report)
    return metas, vectors


def _vector_shards(seg: dict) -> list[dict]:
    """The vector shards of a segment (one, ``vectors_key``, for segments without shards)."""
    if "vector_shards" in seg:
        return list(seg["vector_shards"])
    return [{"key": seg["vectors_key"], "sha256": seg["vectors_sha256"], "rows": seg["rows"]}]


def _check_index_objects(cat, report) -> None:
    """A sharded index's trained index and parts, each against the manifest's sha256."""
    entry = cat.manifest.get("index") or {}
    objects = [(entry["trained_key"], entry["trained_sha256"])] if "trained_key" in entry else []
    objects += [(p["key"], p["sha256"]) for p in entry.get("parts", [])]
    for key, digest in objects:
        try:
            data = cat.store.get(key)
        except StoreNotFoundError:
            report.failed("file", key, f"index object {key} named by manifest.json is missing")
            continue
        got = hashlib.sha256(data).hexdigest()
        if got != digest:
            report.failed(
                "file",
                key,
                f"index object {key} hashes to {got[:16]}..., manifest.json records "
                f"{digest[:16]}...: it was changed after the catalogue was built",
            )


_LEAF_COLUMNS = METADATA_KEYS


def _same(a, b) -> bool:
    if isinstance(a, np.generic):
        a = a.item()
    if isinstance(b, np.generic):
        b = b.item()
    if isinstance(b, int) and not isinstance(a, str):
        try:
            return int(a) == b
        except (TypeError, ValueError):
            return False
    return str(a) == str(b)


def _check_rows(cat, leaves, report, progress) -> list[int]:
    """Compare each tile's stored metadata, vector and pixels with its signed leaf.

    Returns the leaf indexes whose data fail.
    """
    import pandas as pd

    metas, vectors = _segments(cat, report)
    meta = pd.concat(metas, ignore_index=True) if metas else pd.DataFrame()
    vec = np.concatenate(vectors) if vectors else np.zeros((0, 0), "<f4")
    n = len(leaves)
    bad: set[int] = set()
    if len(meta) < n or len(vec) < n:
        report.failed(
            "file",
            "segments",
            f"the catalogue stores {len(meta)} metadata rows and {len(vec)} vectors for a log of "
            f"{n} leaves",
        )
    model = cat.manifest.get("model", {})
    docs = [parse_leaf_lenient(leaf) for leaf in leaves]
    rows = meta.iloc[:n].to_dict("records")  # much faster than .iloc per row
    before = len(report.failures)
    for i, doc in enumerate(docs):
        tile = str(doc.get("tile_id", f"#{i}"))
        if not doc:
            report.failed("tile", tile, f"leaf {i} of the log is not a JSON object")
            bad.add(i)
            continue
        if i >= len(meta) or i >= len(vec):
            bad.add(i)
            continue
        row = rows[i]
        where = f"{row['_file']} row {row['_row']}"
        for col in _LEAF_COLUMNS:
            if col in row and not _same(row[col], doc.get(col)):
                report.failed(
                    "tile",
                    tile,
                    f"tile {tile} (leaf {i}): {col}={row[col]!r} in {where} differs from its "
                    f"signed leaf ({col}={doc.get(col)!r})",
                )
                bad.add(i)
        box = doc.get("box") or [None, None]
        for col, want in (("x0", box[0]), ("y0", box[1])):
            if col in row and not _same(row[col], want):
                report.failed(
                    "tile",
                    tile,
                    f"tile {tile} (leaf {i}): {col}={row[col]!r} in {where} differs from its "
                    f"signed leaf (box {box})",
                )
                bad.add(i)
        if "leaf_index" in row and not _same(row["leaf_index"], i):
            report.failed(
                "tile",
                tile,
                f"tile {tile}: leaf_index={row['leaf_index']!r} in {where}, but it is leaf {i}",
            )
            bad.add(i)
        if "volunteers" in row:
            vols = sorted(str(v) for v in row["volunteers"])
            if vols != doc.get("volunteers"):
                report.failed(
                    "tile",
                    tile,
                    f"tile {tile} (leaf {i}): volunteers {vols} in {where} differ from its "
                    f"signed leaf ({doc.get('volunteers')})",
                )
                bad.add(i)
        for col, leaf_key in (
            ("name", "model"),
            ("weights_sha256", "weights_sha256"),
            ("digest", "preprocessing_digest"),
        ):
            if col in model and model[col] != doc.get(leaf_key):
                report.failed(
                    "tile",
                    tile,
                    f"tile {tile} (leaf {i}): manifest model {col}={model[col]!r} differs from "
                    f"its signed leaf ({leaf_key}={doc.get(leaf_key)!r})",
                )
                bad.add(i)
        got = hashlib.sha256(np.ascontiguousarray(vec[i], dtype="<f4").tobytes()).hexdigest()
        if got != doc.get("embedding_sha256"):
            report.failed(
                "tile",
                tile,
                f"tile {tile} (leaf {i}): its embedding (row {i} of the stored vectors) hashes to "
                f"{got[:16]}..., its signed leaf says {str(doc.get('embedding_sha256'))[:16]}...",
            )
            bad.add(i)
        if progress:
            progress(i + 1, 2 * n)
    if len(report.failures) == before:
        report.checks.append(f"metadata and embeddings of {n} tiles match their leaves")
    bad |= _check_pixels(cat, meta, docs, report, progress)
    return sorted(bad)


def _check_pixels(cat, meta, docs, report, progress) -> set[int]:
    """Re-hash every tile's pixels in its tile store and compare with the leaf."""
    bad: set[int] = set()
    n = len(docs)
    if "tile_store" in meta.columns:
        groups = meta.iloc[:n].groupby("tile_store", sort=False).groups
    else:
        groups = {None: meta.index[:n]}
    done = 0
    for uri, rows in groups.items():
        try:
            opener = getattr(cat, "_open_tile_store", None)
            ts = opener(str(uri)) if (opener and uri is not None) else cat.tile_store
        except Exception as exc:  # the tile store cannot be opened: every tile of it fails
            for i in rows:
                tile = str(docs[i].get("tile_id", f"#{i}"))
                report.failed("tile", tile, f"tile {tile}: cannot read its pixels: {exc}")
                bad.add(int(i))
            continue
        for i in rows:
            i = int(i)
            tile = str(docs[i].get("tile_id", f"#{i}"))
            try:
                got = tile_sha256(ts.read(tile))
            except Exception as exc:  # a missing or unreadable tile is a failure of that tile
                report.failed(
                    "tile", tile, f"tile {tile} (leaf {i}): cannot read its pixels: {exc}"
                )
                bad.add(i)
                continue
            if got != docs[i].get("tile_sha256"):
                report.failed(
                    "tile",
                    tile,
                    f"tile {tile} (leaf {i}): its pixels in the tile store {ts.uri} hash to "
                    f"{got[:16]}..., its signed leaf says {str(docs[i].get('tile_sha256'))[:16]}...",
                )
                bad.add(i)
            done += 1
            if progress:
                progress(n + done, 2 * n)
    if not bad:
        report.checks.append(f"pixels of {done} tiles re-hashed: they match their leaves")
    return bad


def _check_records(cat, leaves, report) -> None:
    """The catalogue's own records (what it would sign today) against the signed leaves."""
    try:
        records = cat.records()
    except Exception as exc:  # the catalogue refuses its own files: already named above
        report.failed("catalogue", cat.store.uri, f"the catalogue cannot read its records: {exc}")
        return
    if len(records) != len(leaves):
        report.failed(
            "catalogue",
            cat.store.uri,
            f"the catalogue has {len(records)} records, the log {len(leaves)} leaves",
        )
    for i, (record, leaf) in enumerate(zip(records, leaves, strict=False)):
        check_record(record, leaf, i, report)


def _check_previous_version(cat, prov: Mapping, cp: Checkpoint | None, report) -> None:
    """The recorded consistency proof from the previous version, against both roots."""
    prev = prov.get("previous")
    if not prev or cp is None or not prev.get("tree_size"):
        return
    old_size, old_root = prev.get("tree_size"), prev.get("root")
    versions = cat.manifest.get("versions") or []
    if len(versions) >= 2 and versions[-2].get("merkle_root") not in (None, old_root):
        report.failed(
            "manifest",
            "versions",
            f"manifest.json says the previous version's root is {versions[-2].get('merkle_root')!r}"
            f" in versions[] but {old_root!r} in provenance.previous",
        )
    try:
        failure = consistency_failure(
            old_size, cp.size, old_root, cp.root, prov.get("consistency_proof") or []
        )
    except ProvenanceError as exc:
        failure = str(exc)
    if failure:
        report.failed(
            "consistency",
            "provenance.consistency_proof",
            f"the recorded consistency proof from the previous version ({old_size} leaves) does "
            f"not verify: {failure}",
        )
    else:
        report.checks.append(
            f"consistency with the previous version: {old_size} -> {cp.size} leaves"
        )


def _check_hash_shards(cat, shards, tree: MerkleTree, report) -> None:
    """Each leaf-hash shard against the hashes of its (read) leaves, naming a damaged one."""
    hashes = tree.levels[0]
    for shard in shards:
        first, n, key = int(shard["first"]), int(shard["leaves"]), shard["hashes_key"]
        if first >= tree.size:
            break
        if not cat.store.exists(key):
            report.failed("file", key, f"leaf-hash shard {key} named by manifest.json is missing")
            continue
        stored = cat.store.get(key)
        want = hashes[32 * first : 32 * min(first + n, tree.size)]
        if stored[: len(want)] != want:
            report.failed(
                "file", key, f"leaf-hash shard {key} differs from the hashes of its leaves"
            )


def _proof_for(
    tree: MerkleTree, leaves, index: int, tile_id: str, cp: Checkpoint
) -> InclusionProof:
    return InclusionProof(
        tile_id=tile_id,
        leaf_index=index,
        tree_size=tree.size,
        leaf=leaves[index].decode("utf-8"),
        leaf_hash=tree.leaf_hash(index).hex(),
        path=[h.hex() for h in tree.inclusion_proof(index)],
        root=cp.root.hex(),
        checkpoint=cp.text,
    )


# --------------------------------------------------------------------------- public


def verify_catalogue(
    cat,
    tile_id: str | None = None,
    against: str | os.PathLike[str] | Checkpoint | None = None,
    public_key: str | os.PathLike[str] | VerifierKey | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> VerificationReport:
    """Check a whole catalogue's provenance; name every tile or file that fails.

    Re-hashes every stored tile (pixels, in its tile store) and embedding (vector bytes as
    stored), compares every metadata value that is part of a leaf with the signed leaf, rebuilds
    the Merkle root from the leaves and compares it with the checkpoint, the manifest and the
    stored leaf hashes, and checks the checkpoint's Ed25519 signature.

    Parameters
    ----------
    cat : catalog.Catalogue
        The catalogue (any version).
    tile_id : str, optional
        Also prove this tile's inclusion (``report.proof``).
    against : str, path or Checkpoint, optional
        An older checkpoint (its file or text): prove this version extends it (``report.consistency``).
    public_key : str, path or VerifierKey, optional
        The operator's public key. Default: the key the catalogue publishes (a warning says so).
    progress : callable, optional
        ``progress(done, total)`` while tiles are re-hashed.

    Returns
    -------
    VerificationReport
        ``report.ok`` is True only if every check holds.

    Raises
    ------
    ProvenanceNotFoundError
        If the catalogue has no provenance record or its provenance files are missing.
    catalog.UnknownTileError
        If ``tile_id`` is not in the catalogue.
    CheckpointError
        If ``against`` is not a checkpoint.
    """
    report = VerificationReport(catalogue=str(cat.store.uri))
    prov = provenance_entry(cat)
    cp, key = check_checkpoint(cat, prov, public_key, report)
    size = cp.size if cp is not None else int(prov.get("tree_size") or 0)
    damaged: list[tuple[str, str]] = []
    leaves = stored_leaves(cat, prov, size, damaged)
    for key, reason in damaged:
        report.failed("file", key, reason)
    tree = MerkleTree(leaf_hashes(leaves))
    files = prov.get("files") or {}
    where = files.get("leaves") or LEAVES_KEY
    if cp is not None:
        if tree.root == cp.root:
            report.checks.append(f"{size} leaves in {where} hash to the checkpoint's root")
        else:
            report.failed(
                "file",
                damaged[0][0] if damaged else where,
                f"the {size} leaves in {where} hash to root {tree.root.hex()}, not to the "
                f"checkpoint's root {cp.root.hex()}: the leaves were altered",
            )
    stored_hashes_key = files.get("leaf_hashes") or LEAF_HASHES_KEY
    if files.get("leaf_shards"):
        _check_hash_shards(cat, files["leaf_shards"], tree, report)
    elif cat.store.exists(stored_hashes_key):
        stored = cat.store.get(stored_hashes_key)[: 32 * size]
        if stored != tree.levels[0]:
            first = next(
                (i for i in range(size) if stored[32 * i : 32 * i + 32] != tree.leaf_hash(i)),
                len(stored) // 32,
            )
            report.failed(
                "file",
                stored_hashes_key,
                f"{stored_hashes_key} differs from the hashes of the leaves (first at leaf {first})",
            )
    _check_rows(cat, leaves, report, progress)
    _check_records(cat, leaves, report)
    _check_previous_version(cat, prov, cp, report)

    if tile_id is not None:
        index = cat.row_of(tile_id)
        if index >= size:
            report.failed(
                "tile",
                tile_id,
                f"tile {tile_id} is row {index}, beyond the {size} leaves of the checkpoint",
            )
        elif cp is not None:
            proof = _proof_for(tree, leaves, index, tile_id, cp)
            report.proof = proof
            if proof.verify():
                report.checks.append(f"inclusion proof of tile {tile_id} (leaf {index})")
            else:
                report.failed(
                    "tile", tile_id, f"tile {tile_id}: its inclusion proof does not verify"
                )

    if against is not None and cp is not None:
        old, where = parse_against(against)
        if old.signatures and key is not None:
            failure = old.signature_failure(key)
            if failure:
                report.failed("signature", where, f"{where}: {failure}")
        if old.origin != cp.origin:
            report.failed(
                "consistency",
                where,
                f"{where} is of log {old.origin!r}, this catalogue's log is {cp.origin!r}",
            )
        if old.size > size or old.size == 0:
            report.failed(
                "consistency",
                where,
                f"{where} has {old.size} leaves; this catalogue has {size}, so it cannot extend it",
            )
        else:
            proof = tree.consistency_proof(old.size)
            failure = consistency_failure(old.size, size, old.root, cp.root, proof)
            report.consistency = ConsistencyCheck(
                old.size, size, old.root.hex(), cp.root.hex(), [p.hex() for p in proof], not failure
            )
            if failure:
                report.failed(
                    "consistency",
                    where,
                    f"this catalogue does not extend {where} (size {old.size}, root "
                    f"{old.root.hex()}): {failure}; old rows were changed or removed",
                )
            else:
                report.checks.append(
                    f"consistency with {where}: {old.size} -> {size} leaves, "
                    f"{len(proof)}-hash proof"
                )
    return report
