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
import itertools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catalog.provenance._checkpoint import Checkpoint, VerifierKey, load_verifier_key
from catalog.provenance._leaves import (
    LEAF_HASHES_KEY,
    LEAVES_KEY,
    PUBLIC_KEY_KEY,
    checkpoint_history_key,
    decode_leaves,
    leaf_bytes,
    parse_leaf_lenient,
)
from catalog.provenance._merkle import (
    MerkleTree,
    consistency_failure,
    hash_leaf,
    inclusion_failure,
    leaf_hashes,
)
from catalog.provenance.errors import (
    CheckpointError,
    ProvenanceError,
    ProvenanceNotFoundError,
    SigningKeyError,
    VerificationError,
)

__all__ = [
    "ConsistencyCheck",
    "InclusionProof",
    "VerificationReport",
    "verify_catalogue",
    "verify_tile",
]


# --------------------------------------------------------------------------- results


@dataclass
class InclusionProof:
    """The inclusion proof of one tile's leaf in the signed tree.

    Attributes
    ----------
    tile_id : str
    leaf_index : int
        0-based position of the leaf.
    tree_size : int
    leaf : str
        The leaf itself (RFC 8785 JSON of the tile's record).
    leaf_hash : str
        ``SHA-256(0x00 || leaf)``, hex.
    path : list of str
        Sibling hashes, leaf-to-root order, hex (``ceil(log2(tree_size))`` at most).
    root : str
        Root of the signed checkpoint, hex.
    checkpoint : str
        The signed checkpoint the root comes from.
    """

    tile_id: str
    leaf_index: int
    tree_size: int
    leaf: str
    leaf_hash: str
    path: list[str]
    root: str
    checkpoint: str = ""

    def verify(self) -> bool:
        """Re-run RFC 9162's inclusion check (leaf -> leaf hash -> path -> root)."""
        if hash_leaf(self.leaf.encode()).hex() != self.leaf_hash:
            return False
        return (
            inclusion_failure(self.leaf_hash, self.leaf_index, self.tree_size, self.path, self.root)
            is None
        )

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return {
            "tile_id": self.tile_id,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "leaf": self.leaf,
            "leaf_hash": self.leaf_hash,
            "inclusion_path": list(self.path),
            "root": self.root,
            "checkpoint": self.checkpoint,
        }

    def __str__(self) -> str:
        lines = [
            f"inclusion proof of tile {self.tile_id}: leaf {self.leaf_index} of {self.tree_size}",
            f"  leaf      {self.leaf}",
            f"  leaf hash {self.leaf_hash}",
        ]
        lines += [f"  path[{i:2d}]  {h}" for i, h in enumerate(self.path)]
        lines.append(f"  root      {self.root}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:  # shown as text in notebooks
        import html

        return f"<pre>{html.escape(str(self))}</pre>"


@dataclass
class ConsistencyCheck:
    """The consistency of the catalogue with an older checkpoint."""

    old_size: int
    new_size: int
    old_root: str
    new_root: str
    proof: list[str]
    ok: bool

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return dict(self.__dict__)


@dataclass
class Failure:
    """One failed check: what (``tile``, ``file``, ``signature``, ...), which one, and why."""

    kind: str
    subject: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class VerificationReport:
    """Result of :func:`verify_catalogue`: what was checked, what failed, and the proofs.

    Attributes
    ----------
    catalogue : str
        URI of the catalogue.
    tree_size : int
    root : str
        Root of the checkpoint, hex.
    key : str
        The key the signature was checked with (``name+hash``), or ``""`` when unsigned.
    checks : list of str
        Checks that passed.
    failures : list of Failure
        Checks that failed, each naming the tile, file or value at fault.
    warnings : list of str
        What the verification could not establish (an unsigned log, an unpinned key).
    proof : InclusionProof or None
        For ``tile_id``.
    consistency : ConsistencyCheck or None
        For ``against``.
    """

    catalogue: str
    tree_size: int = 0
    root: str = ""
    key: str = ""
    checks: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    proof: InclusionProof | None = None
    consistency: ConsistencyCheck | None = None

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return not self.failures

    def failed(self, kind: str, subject: str, message: str) -> None:
        self.failures.append(Failure(kind, subject, message))

    @property
    def failed_tiles(self) -> list[str]:
        """tile_ids named by a failure, without duplicates, in order."""
        return list(dict.fromkeys(f.subject for f in self.failures if f.kind == "tile"))

    def raise_if_failed(self) -> None:
        """Raise :class:`VerificationError` listing every failure, if there is one."""
        if self.failures:
            head = (
                f"provenance of {self.catalogue} does not verify ({len(self.failures)} failure(s))"
            )
            lines = [str(f) for f in self.failures]
            shown = lines[:20] + ([f"... and {len(lines) - 20} more"] if len(lines) > 20 else [])
            raise VerificationError(head + ":\n  " + "\n  ".join(shown), lines)

    def summary(self) -> str:
        """A few lines: the verdict, the tree, and each failure."""
        verdict = "OK" if self.ok else "FAILED"
        lines = [
            f"provenance of {self.catalogue}: {verdict}",
            f"  tree size {self.tree_size}, root {self.root}",
            f"  signed by {self.key}" if self.key else "  not signed",
        ]
        lines += [f"  ok    {c}" for c in self.checks]
        lines += [f"  WARN  {w}" for w in self.warnings]
        lines += [f"  FAIL  {f}" for f in self.failures]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return {
            "catalogue": self.catalogue,
            "ok": self.ok,
            "tree_size": self.tree_size,
            "root": self.root,
            "key": self.key,
            "checks": list(self.checks),
            "failures": [f.__dict__ for f in self.failures],
            "warnings": list(self.warnings),
            "proof": self.proof.to_dict() if self.proof else None,
            "consistency": self.consistency.to_dict() if self.consistency else None,
        }


# --------------------------------------------------------------------------- reading


def _provenance_entry(cat) -> dict:
    prov = cat.manifest.get("provenance")
    if not isinstance(prov, Mapping) or "checkpoint" not in prov:
        msg = (
            f"catalogue {cat.store.uri} has no provenance record in manifest.json; it was built "
            "without one (or the manifest was edited). Rebuild it with `hubcat run`"
        )
        raise ProvenanceNotFoundError(msg)
    return dict(prov)


def _get(store, key: str, what: str) -> bytes:
    from hubcat.errors import StoreNotFoundError

    try:
        return store.get(key)
    except StoreNotFoundError:
        msg = (
            f"{what} {key} is missing from catalogue {store.uri}; the catalogue was copied "
            "without its provenance/ folder. Copy it whole, or rebuild it"
        )
        raise ProvenanceNotFoundError(msg) from None


def _stored_leaves(cat, prov: Mapping, size: int) -> list[bytes]:
    key = (prov.get("files") or {}).get("leaves") or LEAVES_KEY
    leaves = decode_leaves(_get(cat.store, key, "provenance file"), key)
    if len(leaves) < size:
        msg = f"{key} of {cat.store.uri} holds {len(leaves)} leaves; the checkpoint says {size}"
        raise ProvenanceError(msg)
    return leaves[:size]


def _trusted_key(cat, prov: Mapping, public_key, report: VerificationReport | None):
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


def _parse_against(against) -> tuple[Checkpoint, str]:
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


def _check_checkpoint(
    cat, prov, public_key, report
) -> tuple[Checkpoint | None, VerifierKey | None]:
    try:
        cp = Checkpoint.parse(prov["checkpoint"], source="checkpoint in manifest.json")
    except CheckpointError as exc:
        report.failed("checkpoint", "manifest.json", str(exc))
        return None, None
    report.tree_size, report.root = cp.size, cp.root.hex()
    key, pinned = _trusted_key(cat, prov, public_key, report)
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


def _segments(cat, report) -> tuple[list, list[np.ndarray]]:
    """Raw metadata rows and vectors of every segment, checked against the manifest's sha256."""
    import pandas as pd

    metas, vectors = [], []
    dim = int(cat.manifest["model"]["dim"])
    for seg in cat.manifest["segments"]:
        for what, key, digest in (
            ("metadata", seg["metadata_key"], seg["metadata_sha256"]),
            ("vectors", seg["vectors_key"], seg["vectors_sha256"]),
        ):
            data = _get(cat.store, key, f"catalogue {what} file")
            got = hashlib.sha256(data).hexdigest()
            if got != digest:
                report.failed(
                    "file",
                    key,
                    f"{key} hashes to {got[:16]}..., manifest.json records {digest[:16]}...: "
                    "the file was changed after the catalogue was built",
                )
            if what == "metadata":
                frame = pd.read_parquet(io.BytesIO(data))
                frame["_file"] = key
                frame["_row"] = np.arange(len(frame))
                metas.append(frame)
            else:
                if len(data) % (4 * dim):
                    report.failed("file", key, f"{key} is not a whole number of {dim}-d vectors")
                    data = data[: len(data) - len(data) % (4 * dim)]
                vectors.append(np.frombuffer(data, dtype="<f4").reshape(-1, dim))
    return metas, vectors


_LEAF_COLUMNS = (
    "tile_id",
    "source",
    "source_sha256",
    "hdu",
    "zoom",
    "tiling_digest",
    "tile_sha256",
    "embedding_sha256",
    "software_version",
)


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
            report.failed("tile", tile, f"leaf {i} in {LEAVES_KEY} is not a JSON object")
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


def _tile_sha256(tile: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(tile, dtype="<f4").tobytes()).hexdigest()


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
                got = _tile_sha256(ts.read(tile))
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
        _check_records_one(record, leaf, i, report)


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
    prov = _provenance_entry(cat)
    cp, key = _check_checkpoint(cat, prov, public_key, report)
    size = cp.size if cp is not None else int(prov.get("tree_size") or 0)
    leaves = _stored_leaves(cat, prov, size)
    tree = MerkleTree(leaf_hashes(leaves))
    if cp is not None:
        if tree.root == cp.root:
            report.checks.append(f"{size} leaves in {LEAVES_KEY} hash to the checkpoint's root")
        else:
            report.failed(
                "file",
                LEAVES_KEY,
                f"the {size} leaves in {LEAVES_KEY} hash to root {tree.root.hex()}, not to the "
                f"checkpoint's root {cp.root.hex()}: the leaves file was altered",
            )
    stored_hashes_key = (prov.get("files") or {}).get("leaf_hashes") or LEAF_HASHES_KEY
    if cat.store.exists(stored_hashes_key):
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
        old, where = _parse_against(against)
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
        first = int(seg.get("first_row", 0))
        if first <= index < first + int(seg["rows"]):
            data = cat.store.get_range(seg["vectors_key"], (index - first) * 4 * dim, 4 * dim)
            if len(data) != 4 * dim:
                msg = f"{seg['vectors_key']} is truncated: row {index - first} is incomplete"
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
    prov = _provenance_entry(cat)
    cp, _key = _check_checkpoint(cat, prov, public_key, report)
    if cp is None:
        report.raise_if_failed()
    if index >= cp.size:
        msg = f"tile {tile_id} is row {index}, beyond the {cp.size} leaves of the signed checkpoint"
        raise VerificationError(msg, [msg])
    hashes_key = (prov.get("files") or {}).get("leaf_hashes") or LEAF_HASHES_KEY
    hashes = _get(cat.store, hashes_key, "provenance file")[: 32 * cp.size]
    if len(hashes) != 32 * cp.size:
        report.failed("file", hashes_key, f"{hashes_key} is truncated: fewer than {cp.size} hashes")
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
        signed = _stored_leaves(cat, prov, cp.size)[index]
        if leaf is not None:
            _check_records_one(record, signed, index, report)
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
        got = _tile_sha256(pixels)
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


def _check_records_one(
    record: Mapping, leaf: bytes, index: int, report: VerificationReport
) -> None:
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
