"""Provenance benchmark: Merkle tree building, proof sizes, verification and leaf encoding.

Figures (each a ratio against a baseline measured in the same run):

- tree building for 10^6 leaves (leaves/s, leaf hashes + every node) against plain hashlib
  SHA-256 over the same leaf bytes (goal >= 0.5);
- memory of the tree (all levels) against the leaf bytes it covers;
- inclusion and consistency proof sizes against the leaf hashes a verifier would otherwise need;
- inclusion-proof verification (proofs/s) against plain SHA-256 of one leaf;
- RFC 8785 leaf encoding (records/s) against ``json.dumps(sort_keys=True)``;
- the sharded log (leaf and hash shards written, the tree streamed) against the in-memory tree,
  and an inclusion proof read from the hash shards against one from the hashes in memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import time

from benchmarks._common import Figure, timeit

STAGE = "provenance"


def _records(n: int) -> list[dict]:
    """``n`` realistic tile records (distinct ids and hashes)."""
    out = []
    for i in range(n):
        h = hashlib.sha256(i.to_bytes(8, "little")).hexdigest()
        out.append(
            {
                "tile_id": f"{h[:16]}_h1_z1_x{224 * (i % 500)}_y{224 * (i // 500)}",
                "source": f"s3://stpubdata/hst/public/j8bt/j8bt{i % 97:02d}nyq/j8bt{i % 97:02d}nyq_drz.fits",
                "source_sha256": h,
                "hdu": 1,
                "zoom": 1 + i % 3,
                "box": [224 * (i % 500), 224 * (i // 500), 224, 224],
                "tiling_digest": hashlib.sha256(b"tiling").hexdigest(),
                "tile_sha256": hashlib.sha256(h.encode()).hexdigest(),
                "model": "tf_efficientnet_lite0",
                "weights_sha256": hashlib.sha256(b"weights").hexdigest(),
                "preprocessing_digest": hashlib.sha256(b"prep").hexdigest(),
                "embedding_sha256": hashlib.sha256(h[::-1].encode()).hexdigest(),
                "embedding_dtype": "<f4",
                "embedding_shape": [1280],
                "volunteers": sorted(["vol-0007", f"vol-{i % 1000:04d}"]),
                "software_version": "0.1.0",
            }
        )
    return out


def _leaves(n: int, template: bytes) -> list[bytes]:
    """``n`` distinct leaves of the size of ``template`` (a real leaf), made fast.

    The last 12 hex digits of the leaf's ``tile_sha256`` become the leaf number.
    """
    key = b'"tile_sha256":"'
    at = template.index(key) + len(key) + 52
    head, tail = template[:at], template[at + 12 :]
    return [head + b"%012x" % i + tail for i in range(n)]


def run(quick: bool = False) -> list[Figure]:
    from catalog.provenance._leaves import canonical_json, leaf_bytes
    from catalog.provenance._merkle import MerkleTree, verify_consistency, verify_inclusion

    n = 100_000 if quick else 1_000_000
    repeat = 1 if quick else 2
    sample = _records(2000 if quick else 10_000)
    leaves = _leaves(n, leaf_bytes(sample[0]))
    leaf_size = len(leaves[0])
    figures: list[Figure] = []

    sha256 = hashlib.sha256
    t_hash = timeit(lambda: [sha256(leaf).digest() for leaf in leaves], repeat=repeat)
    t_tree = timeit(lambda: MerkleTree.from_leaves(leaves), repeat=repeat)
    figures.append(
        Figure(
            STAGE,
            f"tree build, {n:,} leaves of {leaf_size} B",
            n / t_tree,
            "leaves/s",
            "hashlib sha256 of the leaves",
            n / t_hash,
            goal=">= 0.5",
            note=f"{t_tree:.2f} s for the tree ({n - 1:,} nodes), {t_hash:.2f} s for bare hashing",
        )
    )

    tree = MerkleTree.from_leaves(leaves)
    tree_bytes = sum(len(level) for level in tree.levels)
    leaf_bytes_total = sum(len(x) for x in leaves)
    figures.append(
        Figure(
            STAGE,
            "tree memory (every level)",
            tree_bytes / 2**20,
            "MiB",
            "leaf bytes",
            leaf_bytes_total / 2**20,
            note="levels are contiguous bytes: 32 B per node, no Python object per node",
        )
    )

    indexes = [0, 1, n // 3, n // 2, n - 2, n - 1]
    sizes = [32 * len(tree.inclusion_proof(i)) for i in indexes]
    figures.append(
        Figure(
            STAGE,
            "inclusion proof size",
            max(sizes),
            "bytes",
            "all leaf hashes",
            32 * n,
            note=f"{max(sizes) // 32} hashes = ceil(log2({n:,})) = {math.ceil(math.log2(n))}",
        )
    )
    old = n // 2 + 1
    cproof = tree.consistency_proof(old)
    figures.append(
        Figure(
            STAGE,
            f"consistency proof size ({old:,} -> {n:,})",
            32 * len(cproof),
            "bytes",
            "all leaf hashes",
            32 * n,
        )
    )

    root = tree.root
    proofs = [(tree.leaf_hash(i), i, tree.inclusion_proof(i)) for i in indexes]

    def verify_all() -> None:
        for leaf_hash, i, path in proofs:
            if not verify_inclusion(leaf_hash, i, n, path, root):
                raise AssertionError("a valid proof was rejected")

    t_verify = timeit(verify_all, repeat=5, min_time=0.2) / len(proofs)
    t_one = timeit(lambda: sha256(b"\x00" + leaves[0]).digest(), repeat=5, min_time=0.05)
    figures.append(
        Figure(
            STAGE,
            "inclusion proof verification",
            1 / t_verify,
            "proofs/s",
            "sha256 of one leaf",
            1 / t_one,
            note=f"{t_verify * 1e6:.0f} us per proof of {max(sizes) // 32} hashes",
        )
    )
    old_root = MerkleTree.from_leaves(leaves[:old]).root
    t0 = time.perf_counter()
    ok = verify_consistency(old, n, old_root, root, cproof)
    t_cons = time.perf_counter() - t0
    if not ok:
        raise AssertionError("a valid consistency proof was rejected")
    figures.append(
        Figure(
            STAGE,
            "consistency proof verification",
            1 / t_cons,
            "proofs/s",
            "sha256 of one leaf",
            1 / t_one,
        )
    )

    figures.extend(_sharded_figures(leaves, tree, repeat))

    t_jcs = timeit(lambda: [leaf_bytes(r) for r in sample], repeat=repeat)
    t_json = timeit(
        lambda: [json.dumps(r, sort_keys=True, separators=(",", ":")).encode() for r in sample],
        repeat=repeat,
    )
    assert (
        canonical_json(sample[0])
        == json.dumps(sample[0], sort_keys=True, separators=(",", ":")).encode()
    )
    figures.append(
        Figure(
            STAGE,
            "leaf encoding (RFC 8785, checked records)",
            len(sample) / t_jcs,
            "records/s",
            "json.dumps(sort_keys)",
            len(sample) / t_json,
            note=f"{len(sample) / t_jcs * leaf_size / 2**20:.1f} MiB/s of leaves",
        )
    )
    return figures


def _sharded_figures(leaves: list[bytes], tree, repeat: int) -> list[Figure]:
    """The sharded log (leaf and hash shards written to a folder, the tree streamed) against
    ``MerkleTree.from_leaves`` in memory, and an inclusion proof read from the hash shards."""
    import tempfile

    from catalog.provenance._leafshards import HashShards, write_leaf_shards
    from catalog.provenance._merkle import MerkleTree
    from hubcat.storage import LocalObjectStore

    n = len(leaves)
    per_shard = 1 << 17
    out: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalObjectStore(tmp)
        got: dict = {}

        def write() -> None:
            got["shards"], got["tree"] = write_leaf_shards(store, iter(leaves), per_shard)

        t_sharded = timeit(write, repeat=max(repeat, 3))  # disk-bound (fsync): best of >= 3
        t_memory = timeit(lambda: MerkleTree.from_leaves(leaves), repeat=max(repeat, 3))
        if got["tree"].root != tree.root:
            raise AssertionError("the streamed root differs from the in-memory tree's")
        out.append(
            Figure(
                STAGE,
                f"sharded log build ({per_shard:,} leaves per shard, written to disk)",
                n / t_sharded,
                "leaves/s",
                "MerkleTree.from_leaves in memory",
                n / t_memory,
                note=f"{len(got['shards'])} shards; the stream holds "
                f"{32 * len(got['tree']._stack)} B of subtree hashes, the tree "
                f"{sum(len(x) for x in tree.levels) / 2**20:.0f} MiB",
            )
        )
        shards = HashShards(store, got["shards"], n)
        index = n // 3
        t_proof = timeit(lambda: shards.inclusion_proof(index), repeat=3)
        t_tree = timeit(lambda: MerkleTree(tree.levels[0]).inclusion_proof(index), repeat=3)
        if shards.inclusion_proof(index) != tree.inclusion_proof(index):
            raise AssertionError("the proof from the hash shards differs from the tree's")
        out.append(
            Figure(
                STAGE,
                "inclusion proof from hash shards (read by range)",
                1 / t_proof,
                "proofs/s",
                "MerkleTree over the hashes in memory",
                1 / t_tree,
            )
        )
    return out
