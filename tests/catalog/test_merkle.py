"""RFC 6962 / RFC 9162 Merkle tree: conformance vectors and an independent reference."""

from __future__ import annotations

import hashlib
import json

import pytest

from catalog import provenance as pv
from catalog.provenance._merkle import MerkleTree, consistency_failure, inclusion_failure


def load(rfc6962_dir, name):
    return json.loads((rfc6962_dir / name).read_text())


# --------------------------------------------------------------------------- reference (RFC text)
# A direct transcription of RFC 6962 section 2.1 (MTH, PATH, PROOF/SUBPROOF), recursive over
# Python lists: slow and obviously correct, used only to check the fast implementation.


def ref_leaf(d: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + d).digest()


def ref_node(a: bytes, b: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + a + b).digest()


def ref_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return ref_leaf(d[0])
    k = ref_k(n)
    return ref_node(ref_mth(d[:k]), ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = ref_k(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_turns(m: int, n: int) -> list[bool]:
    """For each proof element of leaf m in a tree of n: is the sibling on the right?"""
    if n == 1:
        return []
    k = ref_k(n)
    return [*ref_turns(m, k), True] if m < k else [*ref_turns(m - k, n - k), False]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = ref_k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


# --------------------------------------------------------------------------- conformance vectors


def test_hasher_vectors(rfc6962_dir):
    for v in load(rfc6962_dir, "hasher.json")["vectors"]:
        if v["op"] == "empty_root":
            got = pv.merkle_root([])
        elif v["op"] == "hash_leaf":
            got = pv.hash_leaf(bytes.fromhex(v["input_hex"]))
        else:
            got = pv.hash_children(bytes.fromhex(v["left_hex"]), bytes.fromhex(v["right_hex"]))
        assert got.hex() == v["want"], v["desc"]


def test_tree8_roots_and_levels(rfc6962_dir):
    t = load(rfc6962_dir, "tree8.json")
    leaves = [bytes.fromhex(x) for x in t["leaves_hex"]]
    for n, root in t["roots_by_size"].items():
        assert pv.merkle_root(leaves[: int(n)]).hex() == root, n
    tree = MerkleTree.from_leaves(leaves)
    for level, hashes in enumerate(t["node_hashes_by_level_hex"]):
        got = tree.levels[level]
        assert [got[i : i + 32].hex() for i in range(0, len(got), 32)] == hashes


def test_reference_proofs(rfc6962_dir):
    t = load(rfc6962_dir, "tree8.json")
    leaves = [bytes.fromhex(x) for x in t["leaves_hex"]]
    ref = load(rfc6962_dir, "reference_proofs.json")
    for case in ref["inclusion"]:
        proof = pv.inclusion_proof(leaves[: case["tree_size"]], case["leaf_index"])
        assert [p.hex() for p in proof] == case["path"], case
        assert pv.verify_inclusion(
            case["leaf_hash"], case["leaf_index"], case["tree_size"], proof, case["root"]
        )
    for case in ref["consistency"]:
        proof = pv.consistency_proof(leaves[: case["size2"]], case["size1"])
        assert [p.hex() for p in proof] == case["path"], case
        assert pv.verify_consistency(
            case["size1"], case["size2"], case["root1"], case["root2"], proof
        )


def test_inclusion_probes(rfc6962_dir):
    data = load(rfc6962_dir, "inclusion_probes.json")
    probes = data["probes"]
    assert len(probes) == 98
    wrong = []
    for p in probes:
        ok = pv.verify_inclusion(p["leafHash"], p["leafIdx"], p["treeSize"], p["proof"], p["root"])
        if ok == p["wantErr"]:
            wrong.append(p["file"])
    assert wrong == []
    assert sum(not p["wantErr"] for p in probes) == data["count_valid"] == 6


def test_consistency_probes(rfc6962_dir):
    data = load(rfc6962_dir, "consistency_probes.json")
    probes = data["probes"]
    assert len(probes) == 98
    wrong = []
    for p in probes:
        ok = pv.verify_consistency(p["size1"], p["size2"], p["root1"], p["root2"], p["proof"])
        if ok == p["wantErr"]:
            wrong.append(p["file"])
    assert wrong == []
    assert sum(not p["wantErr"] for p in probes) == data["count_valid"] == 6


# --------------------------------------------------------------------------- exhaustive, n <= 40

N_MAX = 40
LEAVES = [f"leaf {i}".encode() * (i % 3) for i in range(N_MAX)]  # includes empty leaves


def flip(h: bytes, bit: int = 0) -> bytes:
    return bytes([h[0] ^ (1 << bit)]) + h[1:]


@pytest.mark.parametrize("n", range(1, N_MAX + 1))
def test_every_proof_against_reference(n):
    d = LEAVES[:n]
    tree = MerkleTree.from_leaves(d)
    root = ref_mth(d)
    assert tree.root == root == pv.merkle_root(d)
    for m in range(n):
        proof = tree.inclusion_proof(m)
        assert proof == ref_path(m, d)
        lh = ref_leaf(d[m])
        assert pv.verify_inclusion(lh, m, n, proof, root)
        # every single change is rejected
        assert not pv.verify_inclusion(flip(lh), m, n, proof, root)
        assert not pv.verify_inclusion(lh, m, n, proof, flip(root))
        assert not pv.verify_inclusion(lh, m, n, [*proof, root], root)
        assert not pv.verify_inclusion(lh, m, n, [root, *proof], root)
        if proof:
            assert not pv.verify_inclusion(lh, m, n, proof[:-1], root)
        for i in range(len(proof)):
            bad = list(proof)
            bad[i] = flip(bad[i], 7)
            assert not pv.verify_inclusion(lh, m, n, bad, root)
        for other in range(n):  # the index fixes the left/right turns: any other is wrong
            if other != m:
                assert not pv.verify_inclusion(lh, other, n, proof, root)
        # another tree size is accepted exactly when it gives the same turns (RFC 9162 cannot
        # tell those apart), and rejected otherwise
        for size in {*range(max(m, 1), n + 4), 2 * n, 4 * n}:
            if size != n:
                same_shape = m < size and ref_turns(m, size) == ref_turns(m, n)
                assert pv.verify_inclusion(lh, m, size, proof, root) == same_shape, (m, size)
    for m in range(1, n + 1):
        proof = tree.consistency_proof(m)
        assert proof == ref_proof(m, d)
        old_root = ref_mth(d[:m])
        assert pv.verify_consistency(m, n, old_root, root, proof)
        if m < n:
            assert not pv.verify_consistency(m, n, flip(old_root), root, proof)
            assert not pv.verify_consistency(m, n, old_root, flip(root), proof)
            assert not pv.verify_consistency(m, n, root, old_root, proof)
            assert not pv.verify_consistency(m, n, old_root, root, proof[:-1])
            assert not pv.verify_consistency(m, n, old_root, root, [*proof, root])
            for i in range(len(proof)):
                bad = list(proof)
                bad[i] = flip(bad[i], 3)
                assert not pv.verify_consistency(m, n, old_root, root, bad)
            assert not pv.verify_consistency(0, n, old_root, root, proof)


def test_large_tree_matches_compact_range():
    """10^5 leaves: the level-by-level tree equals an independent incremental computation."""
    n = 100_003
    leaves = [i.to_bytes(8, "little") for i in range(n)]
    # compact range: a stack of perfect subtrees, merged as leaves arrive, then folded right
    stack: list[tuple[int, bytes]] = []
    for leaf in leaves:
        h, size = ref_leaf(leaf), 1
        while stack and stack[-1][0] == size:
            h, size = ref_node(stack.pop()[1], h), size * 2
        stack.append((size, h))
    root = stack[-1][1]
    for _size, h in reversed(stack[:-1]):
        root = ref_node(h, root)
    tree = MerkleTree.from_leaves(leaves)
    assert tree.root == root
    for m in (0, 1, 65535, 65536, n - 2, n - 1):
        proof = tree.inclusion_proof(m)
        assert len(proof) <= 17
        assert pv.verify_inclusion(ref_leaf(leaves[m]), m, n, proof, root)
    old = MerkleTree.from_leaves(leaves[:70_000])
    proof = tree.consistency_proof(70_000)
    assert pv.verify_consistency(70_000, n, old.root, root, proof)


# --------------------------------------------------------------------------- bad input


def test_non_hex_is_a_clear_error():
    good = "00" * 32
    with pytest.raises(pv.ProofError, match="not hexadecimal"):
        pv.verify_inclusion("zz" * 32, 0, 1, [], good)
    with pytest.raises(pv.ProofError, match=r"inclusion proof\[1\]"):
        pv.verify_inclusion(good, 0, 4, [good, "not-hex"], good)
    with pytest.raises(pv.ProofError, match="old root"):
        pv.verify_consistency(1, 2, "xyz", good, [good])
    with pytest.raises(pv.ProofError, match="list of hashes"):
        pv.verify_consistency(1, 2, good, good, good)
    with pytest.raises(pv.ProofError, match="must be an int"):
        pv.verify_inclusion(good, "0", 1, [], good)
    assert isinstance(pv.ProofError("x"), ValueError)


def test_wrong_lengths_are_rejected_with_a_reason():
    good = bytes(32)
    assert "not 32" in inclusion_failure(good[:31], 0, 1, [], good)
    assert "not 32" in inclusion_failure(good, 0, 2, [good + b"\x00"], good)
    assert "fewer" in inclusion_failure(good, 0, 2, [], good)
    assert "more" in inclusion_failure(good, 0, 1, [good], good)
    assert "beyond" in inclusion_failure(good, 5, 5, [], good)
    assert "empty tree" in consistency_failure(0, 3, good, good, [good])
    assert "larger" in consistency_failure(4, 3, good, good, [good])
    assert "not 32" in consistency_failure(1, 3, good, good, [good[:5]])


def test_proof_generation_bad_input():
    leaves = [b"a", b"b", b"c"]
    with pytest.raises(pv.ProofError, match="leaf index 3 is outside a tree of 3 leaves"):
        pv.inclusion_proof(leaves, 3)
    with pytest.raises(pv.ProofError, match="outside"):
        pv.inclusion_proof(leaves, -1)
    with pytest.raises(pv.ProofError, match="empty tree"):
        pv.consistency_proof(leaves, 0)
    with pytest.raises(pv.ProofError, match=r"\[1, 3\]"):
        pv.consistency_proof(leaves, 4)
    with pytest.raises(pv.ProofError, match="32-byte"):
        MerkleTree(b"\x00" * 33)
    assert pv.consistency_proof(leaves, 3) == []
    assert MerkleTree(b"").root == pv.EMPTY_ROOT
