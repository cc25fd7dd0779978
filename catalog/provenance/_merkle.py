"""RFC 6962 / RFC 9162 Merkle tree: hashing, tree building, proofs and their verification.

The tree is the one of RFC 6962 section 2.1 (restated in RFC 9162 section 2.1):

- the hash of an empty tree is ``SHA-256("")``;
- a leaf hash is ``SHA-256(0x00 || leaf)``;
- an interior node is ``SHA-256(0x01 || left || right)``;
- for ``n > 1`` leaves the tree splits at ``k``, the largest power of two strictly smaller than
  ``n``; nothing is padded and no leaf is duplicated.

The tree is built bottom-up, one level at a time, each level one contiguous ``bytes`` object of
``32 * width`` bytes (:class:`MerkleTree`). Pairing neighbours and carrying an unpaired last node
up unchanged gives exactly the RFC's split: the node at level ``l`` and position ``j`` is the
Merkle tree hash of leaves ``[j * 2**l, min((j + 1) * 2**l, n))``. Every proof is then a walk
up the levels, with no recursion.

The verifiers are the algorithms of RFC 9162 sections 2.1.3.2 and 2.1.4.2, and they accept
exactly what those algorithms accept: proofs of the wrong length, a wrong index or size, a
consistency proof from the empty tree, and hashes that are not 32 bytes are all rejected.
"""

from __future__ import annotations

import hashlib
import operator
import struct
from collections.abc import Iterable, Sequence

import numpy as np

from catalog.provenance.errors import (
    ProofError,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleTree",
    "consistency_failure",
    "consistency_proof",
    "from_hex",
    "hash_children",
    "hash_leaf",
    "inclusion_failure",
    "inclusion_proof",
    "leaf_hashes",
    "merkle_root",
    "verify_consistency",
    "verify_inclusion",
]

#: Size in bytes of every hash of the tree (SHA-256).
HASH_SIZE = 32
#: Root of the empty tree: SHA-256 of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF = hashlib.sha256(b"\x00")
_NODE = hashlib.sha256(b"\x01")


# --------------------------------------------------------------------------- hashing


def hash_leaf(leaf: bytes) -> bytes:
    """RFC 6962 leaf hash ``SHA-256(0x00 || leaf)`` (32 bytes).

    Parameters
    ----------
    leaf : bytes
        The leaf input (a tile's canonical leaf bytes).

    Returns
    -------
    bytes
        The 32-byte leaf hash.
    """
    h = _LEAF.copy()
    h.update(leaf)
    return h.digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash ``SHA-256(0x01 || left || right)`` (32 bytes).

    Parameters
    ----------
    left, right : bytes
        The two children's 32-byte hashes.

    Returns
    -------
    bytes
        The 32-byte node hash.
    """
    h = _NODE.copy()
    h.update(left)
    h.update(right)
    return h.digest()


def leaf_hashes(leaves: Iterable[bytes]) -> bytes:
    """Leaf hashes of ``leaves`` concatenated: ``32 * len(leaves)`` bytes, in leaf order."""
    sha256 = hashlib.sha256
    # one C-level concatenation per leaf is cheaper than copying a pre-fed hash object
    return b"".join([sha256(b"\x00" + leaf).digest() for leaf in leaves])


_DIGEST = type(hashlib.sha256()).digest
_FIRST = operator.itemgetter(0)


def _next_level(level: bytes) -> bytes:
    """Parent level of ``level`` (concatenated 32-byte hashes); an unpaired last node moves up.

    The ``0x01 || left || right`` inputs are laid out in one buffer by NumPy, and hashed by a
    chain of C-level ``map`` calls, so no Python frame runs per node.
    """
    n = len(level) // HASH_SIZE
    pairs = n // 2
    end = pairs * 2 * HASH_SIZE
    if pairs < 256:  # small levels: the NumPy set-up costs more than it saves
        sha256 = hashlib.sha256
        out = b"".join([sha256(b"\x01" + level[i : i + 64]).digest() for i in range(0, end, 64)])
    else:
        rows = np.empty((pairs, 2 * HASH_SIZE + 1), dtype=np.uint8)
        rows[:, 0] = 1
        rows[:, 1:] = np.frombuffer(level, dtype=np.uint8, count=end).reshape(pairs, 2 * HASH_SIZE)
        inputs = map(_FIRST, struct.iter_unpack(f"{2 * HASH_SIZE + 1}s", rows.tobytes()))
        del rows
        out = b"".join(map(_DIGEST, map(hashlib.sha256, inputs)))
    if n % 2:
        out += level[-HASH_SIZE:]
    return out


class MerkleTree:
    """Every level of an RFC 6962 tree, each level one contiguous ``bytes`` of 32-byte hashes.

    Memory is about ``2 * 32 * n`` bytes for ``n`` leaves (64 MB for 10^6 leaves).

    Parameters
    ----------
    hashes : bytes
        The leaf hashes (already ``SHA-256(0x00 || leaf)``) concatenated, ``32 * n`` bytes.

    Raises
    ------
    ProofError
        If ``len(hashes)`` is not a multiple of 32.
    """

    def __init__(self, hashes: bytes) -> None:
        hashes = bytes(hashes)
        if len(hashes) % HASH_SIZE:
            msg = f"leaf hashes must be 32-byte SHA-256 digests; got {len(hashes)} bytes in all"
            raise ProofError(msg)
        levels = [hashes]
        while len(levels[-1]) > HASH_SIZE:
            levels.append(_next_level(levels[-1]))
        self.levels: list[bytes] = levels

    @classmethod
    def from_leaves(cls, leaves: Iterable[bytes]) -> MerkleTree:
        """Tree over raw leaf inputs (each hashed with the 0x00 prefix).

        Parameters
        ----------
        leaves : iterable of bytes
            The leaf inputs, in leaf order.

        Returns
        -------
        MerkleTree
        """
        return cls(leaf_hashes(leaves))

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self.levels[0]) // HASH_SIZE

    @property
    def root(self) -> bytes:
        """Merkle tree hash of all the leaves (``SHA-256("")`` for an empty tree)."""
        if self.size == 0:
            return EMPTY_ROOT
        return self.levels[-1]

    def leaf_hash(self, index: int) -> bytes:
        """Leaf hash at ``index`` (0-based).

        Parameters
        ----------
        index : int
            Leaf index, in ``[0, size)``.

        Returns
        -------
        bytes
            The 32-byte leaf hash.

        Raises
        ------
        ProofError
            If ``index`` is not in ``[0, size)``.
        """
        self._check_index(index, self.size, "leaf index")
        return self._node(0, index)

    def _node(self, level: int, index: int) -> bytes:
        start = index * HASH_SIZE
        return self.levels[level][start : start + HASH_SIZE]

    @staticmethod
    def _check_index(index: int, size: int, what: str) -> None:
        if isinstance(index, bool) or not isinstance(index, int):
            msg = f"{what} must be an int; got {type(index).__name__} {index!r}"
            raise ProofError(msg)
        if not 0 <= index < size:
            msg = f"{what} {index} is outside a tree of {size} leaves; expected 0 <= index < {size}"
            raise ProofError(msg)

    def _path(self, level: int, index: int) -> list[bytes]:
        """Siblings of node ``(level, index)`` up to the root, bottom first."""
        path = []
        for lvl in range(level, len(self.levels) - 1):
            width = len(self.levels[lvl]) // HASH_SIZE
            sibling = index ^ 1
            if sibling < width:
                path.append(self._node(lvl, sibling))
            index >>= 1
        return path

    def inclusion_proof(self, index: int) -> list[bytes]:
        """RFC 9162 inclusion path (leaf-to-root order) of leaf ``index`` (0-based).

        Parameters
        ----------
        index : int
            Leaf index, in ``[0, size)``.

        Returns
        -------
        list of bytes
            32-byte sibling hashes from the leaf up to the root (empty for a one-leaf tree).

        Raises
        ------
        ProofError
            If ``index`` is not in ``[0, size)``.
        """
        self._check_index(index, self.size, "leaf index")
        return self._path(0, index)

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """RFC 9162 consistency proof from the tree's first ``old_size`` leaves to all of them.

        Empty when ``old_size`` equals the tree size.

        Parameters
        ----------
        old_size : int
            Number of leaves of the older tree, in ``[1, size]``.

        Returns
        -------
        list of bytes
            32-byte node hashes, as RFC 9162 section 2.1.4 orders them.

        Raises
        ------
        ProofError
            If ``old_size`` is not in ``[1, size]``.
        """
        if isinstance(old_size, bool) or not isinstance(old_size, int):
            msg = f"old tree size must be an int; got {type(old_size).__name__} {old_size!r}"
            raise ProofError(msg)
        if not 1 <= old_size <= self.size:
            msg = (
                f"cannot prove consistency from a tree of {old_size} leaves to one of {self.size}; "
                f"the old size must be in [1, {self.size}] (a proof from the empty tree is "
                "meaningless)"
            )
            raise ProofError(msg)
        if old_size == self.size:
            return []
        # The largest perfect subtree ending at old_size, then its path in the whole tree.
        level = (old_size & -old_size).bit_length() - 1
        index = (old_size - 1) >> level
        path = self._path(level, index)
        if index == 0:  # old_size is a power of two: its root is known to the verifier
            return path
        return [self._node(level, index), *path]


# --------------------------------------------------------------------------- public functions


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Merkle tree hash (RFC 6962 ``MTH``) of raw leaf inputs.

    Parameters
    ----------
    leaves : sequence of bytes
        Raw leaf inputs, in log order (each is hashed as ``SHA-256(0x00 || leaf)``).

    Returns
    -------
    bytes
        The 32-byte root; ``SHA-256("")`` for no leaves.
    """
    return MerkleTree.from_leaves(leaves).root


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Inclusion (audit) path of leaf ``index`` in the tree of ``leaves`` (RFC 9162 ``PATH``).

    Parameters
    ----------
    leaves : sequence of bytes
        Raw leaf inputs, in log order.
    index : int
        0-based position of the leaf.

    Returns
    -------
    list of bytes
        32-byte sibling hashes, leaf-to-root order; ``ceil(log2(n))`` at most.

    Raises
    ------
    ProofError
        If ``index`` is not in ``[0, len(leaves))``.
    """
    return MerkleTree.from_leaves(leaves).inclusion_proof(index)


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """Consistency proof between the first ``old_size`` leaves and all ``leaves`` (RFC 9162).

    Parameters
    ----------
    leaves : sequence of bytes
        Raw leaf inputs of the new tree, in log order.
    old_size : int
        Size of the old tree, ``1 <= old_size <= len(leaves)``.

    Returns
    -------
    list of bytes
        32-byte hashes in RFC 9162 order (empty when the sizes are equal).

    Raises
    ------
    ProofError
        If ``old_size`` is out of range.
    """
    return MerkleTree.from_leaves(leaves).consistency_proof(old_size)


def from_hex(value: bytes | str, what: str = "hash") -> bytes:
    """Return ``value`` as bytes, decoding it when it is a hex string.

    Raises
    ------
    ProofError
        If ``value`` is a string that is not hexadecimal, or neither bytes nor str.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            shown = value if len(value) <= 80 else value[:77] + "..."
            msg = f"{what} {shown!r} is not hexadecimal; expected 64 hex digits (a SHA-256 hash)"
            raise ProofError(msg) from None
    msg = f"{what} must be bytes or a hex string; got {type(value).__name__}"
    raise ProofError(msg)


def _proof_list(proof: object, what: str) -> list[bytes]:
    if isinstance(proof, str | bytes):
        msg = f"{what} must be a list of hashes, not a single {type(proof).__name__}"
        raise ProofError(msg)
    try:
        items = list(proof)  # type: ignore[call-overload]
    except TypeError:
        msg = f"{what} must be a list of 32-byte hashes; got {type(proof).__name__}"
        raise ProofError(msg) from None
    return [from_hex(p, f"{what}[{i}]") for i, p in enumerate(items)]


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{what} must be an int; got {type(value).__name__} {value!r}"
        raise ProofError(msg)
    return value


def inclusion_failure(
    leaf_hash: bytes | str,
    index: int,
    tree_size: int,
    proof: Sequence[bytes | str],
    root: bytes | str,
) -> str | None:
    """Why an inclusion proof fails (RFC 9162 section 2.1.3.2), or ``None`` if it verifies.

    Arguments are those of :func:`verify_inclusion`.

    Raises
    ------
    ProofError
        If an argument is not an int, bytes or a hex string where one is expected.
    """
    leaf_hash = from_hex(leaf_hash, "leaf hash")
    root = from_hex(root, "root")
    path = _proof_list(proof, "inclusion proof")
    index = _check_int(index, "leaf index")
    tree_size = _check_int(tree_size, "tree size")
    if len(leaf_hash) != HASH_SIZE:
        return f"leaf hash is {len(leaf_hash)} bytes, not {HASH_SIZE}"
    if len(root) != HASH_SIZE:
        return f"root is {len(root)} bytes, not {HASH_SIZE}"
    for i, p in enumerate(path):
        if len(p) != HASH_SIZE:
            return f"inclusion proof[{i}] is {len(p)} bytes, not {HASH_SIZE}"
    if index < 0 or tree_size < 0:
        return f"negative leaf index {index} or tree size {tree_size}"
    if index >= tree_size:
        return f"leaf index {index} is beyond a tree of {tree_size} leaves"
    fn, sn = index, tree_size - 1
    r = leaf_hash
    for p in path:
        if sn == 0:
            return f"inclusion proof has {len(path)} hashes, more than the path of leaf {index}"
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return f"inclusion proof has {len(path)} hashes, fewer than the path of leaf {index}"
    if r != root:
        return (
            f"the proof leads from leaf {index} to root {r.hex()}, not to the expected root "
            f"{root.hex()}"
        )
    return None


def verify_inclusion(
    leaf_hash: bytes | str,
    index: int,
    tree_size: int,
    proof: Sequence[bytes | str],
    root: bytes | str,
) -> bool:
    """Whether ``proof`` shows leaf ``index`` with hash ``leaf_hash`` is in the tree ``root``.

    Parameters
    ----------
    leaf_hash : bytes or str
        The leaf hash, already ``SHA-256(0x00 || leaf)``; 32 bytes (or 64 hex digits).
    index : int
        0-based position of the leaf.
    tree_size : int
        Number of leaves of the tree.
    proof : sequence of bytes or str
        Inclusion path, leaf-to-root order.
    root : bytes or str
        The tree's 32-byte root.

    Returns
    -------
    bool
        True only if RFC 9162's algorithm accepts the proof.

    Raises
    ------
    ProofError
        If an argument is not bytes or hex (for example a non-hex string) or not an int.
    """
    return inclusion_failure(leaf_hash, index, tree_size, proof, root) is None


def consistency_failure(
    old_size: int,
    new_size: int,
    old_root: bytes | str,
    new_root: bytes | str,
    proof: Sequence[bytes | str],
) -> str | None:
    """Why a consistency proof fails (RFC 9162 section 2.1.4.2), or ``None`` if it verifies.

    Arguments are those of :func:`verify_consistency`.

    Raises
    ------
    ProofError
        If an argument is not an int, bytes or a hex string where one is expected.
    """
    old_root = from_hex(old_root, "old root")
    new_root = from_hex(new_root, "new root")
    path = _proof_list(proof, "consistency proof")
    old_size = _check_int(old_size, "old tree size")
    new_size = _check_int(new_size, "new tree size")
    if old_size < 0 or new_size < 0:
        return f"negative tree size {old_size} or {new_size}"
    if old_size > new_size:
        return f"the old tree ({old_size} leaves) is larger than the new one ({new_size})"
    if old_size == 0:
        return "a consistency proof from the empty tree proves nothing; it is rejected"
    if old_size == new_size:
        if path:
            return f"both trees have {old_size} leaves, so the proof must be empty"
        if old_root != new_root:
            return f"both trees have {old_size} leaves but their roots differ"
        return None
    for name, value in (("old root", old_root), ("new root", new_root)):
        if len(value) != HASH_SIZE:
            return f"{name} is {len(value)} bytes, not {HASH_SIZE}"
    for i, p in enumerate(path):
        if len(p) != HASH_SIZE:
            return f"consistency proof[{i}] is {len(p)} bytes, not {HASH_SIZE}"
    if not path:
        return f"the consistency proof from {old_size} to {new_size} leaves is empty"
    if old_size & (old_size - 1) == 0:
        path = [old_root, *path]
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return f"consistency proof from {old_size} to {new_size} leaves is too long"
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return f"consistency proof from {old_size} to {new_size} leaves is too short"
    if fr != old_root:
        return f"the proof does not lead to the old root {old_root.hex()} (got {fr.hex()})"
    if sr != new_root:
        return f"the proof does not lead to the new root {new_root.hex()} (got {sr.hex()})"
    return None


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes | str,
    new_root: bytes | str,
    proof: Sequence[bytes | str],
) -> bool:
    """Whether ``proof`` shows the tree ``old_root`` is a prefix of the tree ``new_root``.

    Parameters
    ----------
    old_size, new_size : int
        Leaf counts of the two trees.
    old_root, new_root : bytes or str
        Their 32-byte roots (or 64 hex digits).
    proof : sequence of bytes or str
        Consistency proof, RFC 9162 order.

    Returns
    -------
    bool
        True only if RFC 9162's algorithm accepts the proof. Equal sizes need an empty proof
        and equal roots; a proof from size 0 is always rejected.

    Raises
    ------
    ProofError
        If an argument is not bytes or hex (for example a non-hex string) or not an int.
    """
    return consistency_failure(old_size, new_size, old_root, new_root, proof) is None
