"""Sharded provenance leaves and a streaming RFC 6962 tree over them.

The log's leaves are written in shards of at most ``shard_leaves`` leaves:
``provenance/leaves/<first>-<end>.jsonl`` (one leaf per line, as ``leaves.jsonl`` was) and their
leaf hashes ``provenance/leaf_hashes/<first>-<end>.bin`` (32 bytes per leaf), every shard listed
with its sha256 in the manifest (``files["leaf_shards"]``). A shard's key names its leaf range,
so a shard never changes once written: a later version that appends leaves rewrites only the
last, partial shard under a new key, and every earlier version's shards stay as they were.

:class:`MerkleStream` computes the RFC 6962 tree hash from leaf hashes fed in order while
holding one subtree hash per level (a stack of at most ~log2 N hashes), never the leaves: the
build hashes each shard as it is written. :class:`HashShards` reads leaf hashes back by byte
range to make inclusion and consistency proofs (RFC 9162 ``PATH`` and ``SUBPROOF``) from subtree
hashes of leaf ranges, again without holding every hash. Both give the same bytes as
:class:`catalog.provenance.MerkleTree` over the same leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence

from catalog.provenance._merkle import EMPTY_ROOT, HASH_SIZE, MerkleTree, hash_children, leaf_hashes
from catalog.provenance.errors import ProvenanceError, ProvenanceNotFoundError

__all__ = [
    "LEAF_SHARDS_PREFIX",
    "HashShards",
    "MerkleStream",
    "read_shard_leaves",
    "write_leaf_shards",
]

#: Where leaf shards and leaf-hash shards live in the catalogue store.
LEAF_SHARDS_PREFIX = "provenance/leaves/"
HASH_SHARDS_PREFIX = "provenance/leaf_hashes/"
#: Below this many hashes a block is pushed hash by hash (MerkleTree's set-up costs more).
_BLOCK_MIN = 64
#: Leaf hashes read per range request when hashing a range of the tree.
_READ_HASHES = 1 << 16


class MerkleStream:
    """The RFC 6962 tree hash of leaf hashes added in order, in O(log N) memory.

    Attributes
    ----------
    size : int
        Number of leaf hashes added.
    """

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (subtree size, hash), sizes decreasing
        self.size = 0

    def _push(self, size: int, node: bytes) -> None:
        self.size += size
        while self._stack and self._stack[-1][0] == size:
            _, left = self._stack.pop()
            node = hash_children(left, node)
            size *= 2
        self._stack.append((size, node))

    def add_hashes(self, hashes: bytes) -> None:
        """Add concatenated 32-byte leaf hashes (in leaf order).

        Parameters
        ----------
        hashes : bytes
            ``32 * n`` bytes.

        Returns
        -------
        None
        """
        n = len(hashes) // HASH_SIZE
        i = 0
        while i < n:
            align = self.size & -self.size if self.size else 1 << 62
            block = min(align, 1 << ((n - i).bit_length() - 1))
            chunk = hashes[HASH_SIZE * i : HASH_SIZE * (i + block)]
            if block >= _BLOCK_MIN:  # a perfect subtree at an aligned position: one node
                self._push(block, MerkleTree(chunk).root)
            else:
                for j in range(block):
                    self._push(1, chunk[HASH_SIZE * j : HASH_SIZE * (j + 1)])
            i += block

    @property
    def root(self) -> bytes:
        """RFC 6962 ``MTH`` of the hashes added so far (the empty tree's hash for none)."""
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = hash_children(left, node)
        return node


def _shard_name(first: int, end: int) -> str:
    return f"{first:012d}-{end:012d}"


def write_leaf_shards(
    store, leaves: Iterable[bytes], shard_leaves: int, keep: Mapping[str, str] | None = None
) -> tuple[list[dict], MerkleStream]:
    """Write ``leaves`` in shards of at most ``shard_leaves``, hashing them as they go.

    Parameters
    ----------
    store : hubcat.storage.ObjectStore
    leaves : iterable of bytes
        Leaf inputs in log order (consumed once).
    shard_leaves : int
        Largest number of leaves in one shard.
    keep : mapping, optional
        ``{key: sha256}`` of the previous version's shards: a shard with the same key is not
        written again, and must have the same bytes (a shard never changes once written).

    Returns
    -------
    (list of dict, MerkleStream)
        Per shard ``first``, ``leaves``, ``key``, ``bytes``, ``sha256``, ``hashes_key``,
        ``hashes_sha256``; and the tree over every leaf.
    """
    if isinstance(shard_leaves, bool) or not isinstance(shard_leaves, int) or shard_leaves < 1:
        msg = f"shard_leaves={shard_leaves!r} must be a positive integer"
        raise ProvenanceError(msg)
    keep_map = dict(keep or {})
    tree = MerkleStream()
    shards: list[dict] = []
    buf: list[bytes] = []

    def flush() -> None:
        first = tree.size
        name = _shard_name(first, first + len(buf))
        data = b"\n".join(buf) + b"\n"
        hashes = leaf_hashes(buf)
        key, hkey = f"{LEAF_SHARDS_PREFIX}{name}.jsonl", f"{HASH_SHARDS_PREFIX}{name}.bin"
        digest = hashlib.sha256(data).hexdigest()
        if key in keep_map and keep_map[key] != digest:
            msg = (
                f"leaf shard {key} of the previous version would change: old rows were changed, "
                "removed or reordered. A new version must list the previous records first, "
                "unchanged, and only append"
            )
            raise ProvenanceError(msg)
        if key not in keep_map:
            store.put(key, data)
            store.put(hkey, hashes)
        tree.add_hashes(hashes)
        shards.append(
            {
                "first": first,
                "leaves": len(buf),
                "key": key,
                "bytes": len(data),
                "sha256": digest,
                "hashes_key": hkey,
                "hashes_sha256": hashlib.sha256(hashes).hexdigest(),
            }
        )
        buf.clear()

    for leaf in leaves:
        buf.append(leaf)
        if len(buf) == shard_leaves:
            flush()
    if buf:
        flush()
    return shards, tree


def _get(store, key: str) -> bytes:
    from hubcat.errors import StoreNotFoundError

    try:
        return store.get(key)
    except StoreNotFoundError:
        msg = (
            f"provenance shard {key}, named by the manifest, is missing from catalogue "
            f"{store.uri}; the catalogue was copied without it. Copy it whole, or rebuild it"
        )
        raise ProvenanceNotFoundError(msg) from None


def read_shard_leaves(
    store, shards: Sequence[Mapping], size: int, damaged: list[tuple[str, str]] | None = None
) -> Iterator[bytes]:
    """The first ``size`` leaves of the shards, in order, each shard checked.

    Parameters
    ----------
    store : hubcat.storage.ObjectStore
    shards : sequence of dict
        ``files["leaf_shards"]`` of the provenance entry.
    size : int
        Leaves wanted (the checkpoint's tree size).
    damaged : list, optional
        When given, a shard whose sha256 differs from the manifest is appended as
        ``(key, reason)`` and its leaves are still yielded (so the root check fails too);
        otherwise that is an error.

    Yields
    ------
    bytes
        One leaf.

    Raises
    ------
    ProvenanceNotFoundError
        A shard is missing.
    ProvenanceError
        A shard is truncated, holds another number of leaves than the manifest, is altered
        (without ``damaged``), or the shards hold fewer than ``size`` leaves.
    """
    done = 0
    for shard in shards:
        if done >= size:
            break
        key = shard["key"]
        data = _get(store, key)
        got = hashlib.sha256(data).hexdigest()
        if got != shard["sha256"]:
            reason = (
                f"leaf shard {key} hashes to {got[:16]}..., the manifest records "
                f"{str(shard['sha256'])[:16]}...: it was altered or damaged"
            )
            if damaged is None:
                raise ProvenanceError(reason)
            damaged.append((key, reason))
        if not data.endswith(b"\n"):
            msg = f"leaf shard {key} does not end with a newline: it is truncated ({len(data)} bytes, the manifest records {shard['bytes']})"
            raise ProvenanceError(msg)
        leaves = data[:-1].split(b"\n")
        if len(leaves) != int(shard["leaves"]):
            msg = f"leaf shard {key} holds {len(leaves)} leaves, the manifest {shard['leaves']}: it is damaged"
            raise ProvenanceError(msg)
        take = min(len(leaves), size - done)
        yield from leaves[:take]
        done += take
    if done < size:
        msg = f"the leaf shards of {store.uri} hold {done} leaves; the checkpoint says {size}"
        raise ProvenanceError(msg)


class HashShards:
    """Leaf hashes of a sharded log, read by byte range, and the proofs made from them.

    Parameters
    ----------
    store : hubcat.storage.ObjectStore
    shards : sequence of dict
        ``files["leaf_shards"]``.
    size : int
        Tree size (leaves beyond it are ignored).
    """

    def __init__(self, store, shards: Sequence[Mapping], size: int) -> None:
        self.store, self.shards, self.size = store, list(shards), int(size)
        held = sum(int(s["leaves"]) for s in self.shards)
        if held < self.size:
            msg = f"the leaf shards of {store.uri} hold {held} leaves; the checkpoint says {size}"
            raise ProvenanceError(msg)

    def hashes(self, lo: int, hi: int) -> Iterator[bytes]:
        """Concatenated leaf hashes of leaves ``[lo, hi)``, in pieces.

        Parameters
        ----------
        lo, hi : int
            First leaf and one past the last.

        Yields
        ------
        bytes
            Consecutive pieces of ``32 * (hi - lo)`` bytes in all.

        Raises
        ------
        ProvenanceNotFoundError
            A hash shard is missing.
        ProvenanceError
            A hash shard is shorter than the manifest says (truncated).
        """
        from hubcat.errors import StoreNotFoundError

        for shard in self.shards:
            first, count = int(shard["first"]), int(shard["leaves"])
            a, b = max(lo, first), min(hi, first + count)
            while a < b:
                n = min(b - a, _READ_HASHES)
                key = shard["hashes_key"]
                try:
                    data = self.store.get_range(key, HASH_SIZE * (a - first), HASH_SIZE * n)
                except StoreNotFoundError:
                    data = _get(self.store, key)  # raises naming the shard
                if len(data) != HASH_SIZE * n:
                    msg = f"leaf-hash shard {key} is truncated: it lacks the hashes of leaves from {a}"
                    raise ProvenanceError(msg)
                yield data
                a += n

    def range_root(self, lo: int, hi: int) -> bytes:
        """RFC 6962 ``MTH`` of leaves ``[lo, hi)``.

        Parameters
        ----------
        lo, hi : int
            First leaf and one past the last.

        Returns
        -------
        bytes
            32-byte subtree hash.
        """
        tree = MerkleStream()
        for piece in self.hashes(lo, hi):
            tree.add_hashes(piece)
        return tree.root

    def inclusion_proof(self, index: int) -> list[bytes]:
        """RFC 9162 inclusion path of leaf ``index`` (leaf-to-root order).

        Parameters
        ----------
        index : int
            0-based leaf index, in ``[0, size)``.

        Returns
        -------
        list of bytes
            The same hashes as :meth:`MerkleTree.inclusion_proof`.

        Raises
        ------
        ProvenanceError
            ``index`` outside the tree.
        """
        if not 0 <= index < self.size:
            msg = f"leaf index {index} is not in [0, {self.size})"
            raise ProvenanceError(msg)
        path: list[bytes] = []
        lo, hi = 0, self.size
        while hi - lo > 1:
            k = 1 << ((hi - lo - 1).bit_length() - 1)
            if index < lo + k:
                path.append(self.range_root(lo + k, hi))
                hi = lo + k
            else:
                path.append(self.range_root(lo, lo + k))
                lo = lo + k
        return path[::-1]

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """RFC 9162 consistency proof from the first ``old_size`` leaves to :attr:`size`.

        Parameters
        ----------
        old_size : int
            Leaves of the older tree, in ``[1, size]``.

        Returns
        -------
        list of bytes
            The same hashes as :meth:`MerkleTree.consistency_proof`.

        Raises
        ------
        ProvenanceError
            ``old_size`` outside ``[1, size]``.
        """
        if not 1 <= old_size <= self.size:
            msg = f"old tree size {old_size} is not in [1, {self.size}]"
            raise ProvenanceError(msg)
        proof: list[bytes] = []
        lo, hi, whole = 0, self.size, True
        while old_size != hi:
            k = 1 << ((hi - lo - 1).bit_length() - 1)
            if old_size - lo <= k:
                proof.append(self.range_root(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self.range_root(lo, lo + k))
                lo, whole = lo + k, False
        if not whole:
            proof.append(self.range_root(lo, hi))
        return proof[::-1]
