"""Provenance of a catalogue: an RFC 6962 Merkle log of every tile, signed tree heads, proofs.

Every catalogue row (tile) has one leaf: the RFC 8785 canonical JSON of its record (source and its
sha256, HDU, zoom, pixel box, tiling digest, tile bytes sha256, model and weights sha256,
preprocessing digest, embedding sha256 with dtype and shape, agreeing volunteers, software
version, schema version). The leaves form an RFC 6962 / RFC 9162 Merkle tree whose size and root
are published in a C2SP checkpoint signed with the operator's Ed25519 key. Anyone holding the
catalogue and the public key can re-hash the tiles and embeddings, check the root and signature,
get an inclusion proof of one tile, and check that a new version only appended to an old one.

Files, under ``provenance/`` of the catalogue store:

``leaves/<first>-<end>.jsonl``
    the leaves in log order, in shards of bounded size listed with their sha256 in the
    manifest (``files["leaf_shards"]``), one per line (the line without its newline is the
    leaf); catalogues written before shards hold one ``leaves.jsonl``;
``leaf_hashes/<first>-<end>.bin``
    their RFC 6962 leaf hashes, 32 bytes each, read by range for proofs (``leaf_hashes.bin``
    before shards); :class:`MerkleStream` and :class:`HashShards` compute roots and proofs
    from them without holding every leaf;
``checkpoint`` and ``checkpoints/<size>``
    the signed tree head of this version, and of every version;
``consistency/<old>-<new>.json``
    the consistency proof from the previous version;
``public_key``
    the operator's verifier key (signed-note format).

Examples
--------
>>> from catalog import provenance
>>> leaves = [b"a", b"b", b"c"]
>>> root = provenance.merkle_root(leaves)
>>> proof = provenance.inclusion_proof(leaves, 2)
>>> provenance.verify_inclusion(provenance.hash_leaf(b"c"), 2, 3, proof, root)
True
"""

from __future__ import annotations

from catalog.provenance._checkpoint import Checkpoint
from catalog.provenance._keys import (
    SigningKey,
    VerifierKey,
    default_key_path,
    generate_signing_key,
    load_or_create_signing_key,
    load_signing_key,
    load_verifier_key,
    write_key_pair,
)
from catalog.provenance._leafshards import HashShards, MerkleStream
from catalog.provenance._leaves import (
    LEAF_SCHEMA,
    RECORD_KEYS,
    build_provenance,
    canonical_json,
    leaf_bytes,
    parse_leaf,
)
from catalog.provenance._merkle import (
    EMPTY_ROOT,
    MerkleTree,
    consistency_proof,
    hash_children,
    hash_leaf,
    inclusion_proof,
    merkle_root,
    verify_consistency,
    verify_inclusion,
)
from catalog.provenance._record import TileRecord
from catalog.provenance._report import ConsistencyCheck, InclusionProof, VerificationReport
from catalog.provenance._verify import verify_catalogue
from catalog.provenance._verify_tile import verify_tile
from catalog.provenance.errors import (
    CheckpointError,
    ProofError,
    ProvenanceError,
    ProvenanceNotFoundError,
    SignatureError,
    SigningKeyError,
    VerificationError,
)

__all__ = [
    "EMPTY_ROOT",
    "LEAF_SCHEMA",
    "RECORD_KEYS",
    "Checkpoint",
    "CheckpointError",
    "ConsistencyCheck",
    "HashShards",
    "InclusionProof",
    "MerkleStream",
    "MerkleTree",
    "ProofError",
    "ProvenanceError",
    "ProvenanceNotFoundError",
    "SignatureError",
    "SigningKey",
    "SigningKeyError",
    "TileRecord",
    "VerificationError",
    "VerificationReport",
    "VerifierKey",
    "build_provenance",
    "canonical_json",
    "consistency_proof",
    "default_key_path",
    "generate_signing_key",
    "hash_children",
    "hash_leaf",
    "inclusion_proof",
    "leaf_bytes",
    "load_or_create_signing_key",
    "load_signing_key",
    "load_verifier_key",
    "merkle_root",
    "parse_leaf",
    "verify_catalogue",
    "verify_consistency",
    "verify_inclusion",
    "verify_tile",
    "write_key_pair",
]
