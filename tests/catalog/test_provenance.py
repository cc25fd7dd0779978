"""Leaves (RFC 8785), build_provenance, checkpoints and keys."""

from __future__ import annotations

import base64
import hashlib
import json

import numpy as np
import pytest

from catalog import provenance as pv
from catalog.provenance._leaves import decode_leaves
from hubcat.storage import LocalObjectStore


def make_record(i: int, **changes) -> dict:
    vec = np.full(8, i, dtype="<f4")
    record = {
        "tile_id": f"t{i:04d}",
        "source": "/data/mosaic.fits",
        "source_sha256": hashlib.sha256(b"mosaic").hexdigest(),
        "hdu": 1,
        "zoom": 1,
        "box": [224 * i, 0, 224, 224],
        "tiling_digest": "d" * 64,
        "tile_sha256": hashlib.sha256(f"tile {i}".encode()).hexdigest(),
        "model": "tf_efficientnet_lite0",
        "weights_sha256": "e" * 64,
        "preprocessing_digest": "f" * 64,
        "embedding_sha256": hashlib.sha256(vec.tobytes()).hexdigest(),
        "embedding_dtype": "<f4",
        "embedding_shape": [8],
        "volunteers": ["alice", "bob"],
        "software_version": "0.1.0",
    }
    record.update(changes)
    return record


# --------------------------------------------------------------------------- RFC 8785


def test_canonical_json_rfc8785_examples():
    # RFC 8785 section 3.2.3 sorting example (UTF-16 code unit order)
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = list(json.loads(pv.canonical_json(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    # RFC 8785 section 3.2.2 example (numbers, literals, escapes)
    value = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    want = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert pv.canonical_json(value).decode() == want


@pytest.mark.parametrize(
    ("bad", "match"),
    [(float("nan"), "finite"), (2**60, "2\\*\\*53"), (b"x", "no JSON form"), ({1: 2}, "key")],
)
def test_canonical_json_rejects_what_json_cannot_hold(bad, match):
    with pytest.raises(pv.ProvenanceError, match=match):
        pv.canonical_json({"v": bad})


def test_leaf_is_canonical_versioned_and_round_trips():
    rec = make_record(3, box=np.array([672, 0, 224, 224]), zoom=np.int64(1))
    leaf = pv.leaf_bytes(rec)
    assert b"\n" not in leaf and b" " not in leaf.replace(b"/data", b"")
    doc = pv.parse_leaf(leaf)
    assert doc["schema"] == pv.LEAF_SCHEMA
    assert doc["box"] == [672, 0, 224, 224]
    assert list(doc) == sorted(doc)
    assert pv.leaf_bytes(make_record(3)) == leaf  # numpy or Python values: same bytes


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"tile_sha256": "XYZ"}, "tile_sha256"),
        ({"box": [1, 2, 3]}, "box"),
        ({"embedding_dtype": "<f8"}, "embedding_dtype"),
        ({"volunteers": ["bob", "alice"]}, "sorted"),
        ({"zoom": 0}, "zoom"),
        ({"extra": 1}, "unexpected \\['extra'\\]"),
    ],
)
def test_bad_record_names_tile_and_field(change, match):
    with pytest.raises(pv.ProvenanceError, match=match) as info:
        pv.leaf_bytes(make_record(7, **change), position=7)
    assert "t0007" in str(info.value)


def test_missing_key_is_named():
    rec = make_record(1)
    del rec["weights_sha256"]
    with pytest.raises(pv.ProvenanceError, match="missing \\['weights_sha256'\\]"):
        pv.leaf_bytes(rec)


# --------------------------------------------------------------------------- keys and checkpoints


def test_keys_round_trip_and_go_note_format(tmp_path):
    key = pv.load_or_create_signing_key(tmp_path / "k" / "hubcat.key")
    assert key.created and (tmp_path / "k" / "hubcat.key").stat().st_mode & 0o777 == 0o600
    again = pv.load_or_create_signing_key(tmp_path / "k" / "hubcat.key")
    assert not again.created and again.seed == key.seed
    vkey = pv.load_verifier_key(tmp_path / "k" / "hubcat.key.pub")
    assert vkey == key.verifier
    name, hash_hex, blob = vkey.text.split("+", 2)
    raw = base64.b64decode(blob)
    # key hash per C2SP signed-note: SHA-256(name || 0x0A || 0x01 || public key)[:4]
    assert bytes.fromhex(hash_hex) == hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    assert raw[0] == 1 and len(raw) == 33
    assert key.text.startswith("PRIVATE+KEY+hubcat+" + hash_hex + "+")


def test_bad_key_files(tmp_path):
    with pytest.raises(pv.ProvenanceNotFoundError, match="hubcat keygen"):
        pv.load_signing_key(tmp_path / "missing.key")
    (tmp_path / "junk.key").write_text("hello")
    with pytest.raises(pv.SigningKeyError, match="not a signing key"):
        pv.load_signing_key(tmp_path / "junk.key")
    key = pv.generate_signing_key("op")
    text = key.verifier.text
    tampered = text[:-4] + ("AAAA" if not text.endswith("AAAA") else "BBBB")
    with pytest.raises(pv.SigningKeyError):
        pv.load_verifier_key(tampered)


def test_checkpoint_signed_note_format_and_signature():
    key = pv.generate_signing_key("operator.example")
    root = hashlib.sha256(b"r").digest()
    cp = pv.Checkpoint("hubcat/test", 42, root).signed(key)
    lines = cp.text.split("\n")
    assert lines[:4] == ["hubcat/test", "42", base64.b64encode(root).decode(), ""]
    assert lines[4].startswith("\u2014 operator.example ")
    sig = base64.b64decode(lines[4].split(" ")[2])
    assert sig[:4] == key.verifier.key_hash and len(sig) == 68
    parsed = pv.Checkpoint.parse(cp.text)
    assert parsed == cp
    parsed.verify(key.verifier)
    other = pv.generate_signing_key("operator.example")
    with pytest.raises(pv.SignatureError, match=r"not signed by key operator\.example"):
        parsed.verify(other.verifier)
    forged = pv.Checkpoint.parse(cp.text.replace("\n42\n", "\n43\n"))
    with pytest.raises(pv.SignatureError, match="does not match"):
        forged.verify(key.verifier)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("origin\n12\n", "body lines"),
        ("origin\nxx\n" + "A" * 44 + "\n", "not a decimal"),
        ("origin\n1\nnot base64!\n", "not base64"),
        ("origin\n1\nAAAA\n", "not a 32-byte"),
        ("origin\n1\n" + base64.b64encode(bytes(32)).decode(), "newline"),
        ("origin\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n- k abc\n", "start with"),
    ],
)
def test_malformed_checkpoints(text, match):
    with pytest.raises(pv.CheckpointError, match=match):
        pv.Checkpoint.parse(text)


# --------------------------------------------------------------------------- build_provenance


def test_build_provenance_writes_log_and_signed_checkpoint(tmp_path):
    store = LocalObjectStore(tmp_path / "cat")
    key = pv.generate_signing_key("op")
    records = [make_record(i) for i in range(5)]
    prov = pv.build_provenance(records, store, signing_key=key)
    json.dumps(prov)  # JSON-ready for the manifest
    leaves = [pv.leaf_bytes(r) for r in records]
    assert prov["tree_size"] == 5
    assert prov["root"] == pv.merkle_root(leaves).hex()
    (shard,) = prov["files"]["leaf_shards"]
    assert decode_leaves(store.get(shard["key"])) == leaves
    assert store.get(shard["hashes_key"]) == b"".join(pv.hash_leaf(x) for x in leaves)
    assert shard["sha256"] == hashlib.sha256(store.get(shard["key"])).hexdigest()
    cp = pv.Checkpoint.parse(store.get(prov["files"]["checkpoint"]))
    assert cp.text == prov["checkpoint"] and cp.size == 5 and cp.root.hex() == prov["root"]
    cp.verify(pv.load_verifier_key(prov["public_key"]))
    assert store.get("provenance/public_key").decode().strip() == prov["public_key"]


def test_build_provenance_new_version_appends_with_consistency_proof(tmp_path):
    store = LocalObjectStore(tmp_path / "cat")
    key = pv.generate_signing_key("op")
    v1 = pv.build_provenance([make_record(i) for i in range(5)], store, signing_key=key)
    v2 = pv.build_provenance(
        [make_record(i) for i in range(13)], store, signing_key=key, previous=v1
    )
    assert v2["previous"] == {"tree_size": 5, "root": v1["root"]}
    assert v2["origin"] == v1["origin"]
    assert pv.verify_consistency(5, 13, v1["root"], v2["root"], v2["consistency_proof"])
    doc = json.loads(store.get(v2["files"]["consistency"]))
    assert doc["proof"] == v2["consistency_proof"]
    assert store.exists("provenance/checkpoints/5") and store.exists("provenance/checkpoints/13")


def test_build_provenance_refuses_a_rewritten_history(tmp_path):
    store = LocalObjectStore(tmp_path / "cat")
    v1 = pv.build_provenance([make_record(i) for i in range(5)], store)
    assert not v1["signed"] and v1["public_key"] is None
    records = [make_record(i) for i in range(8)]
    records[2] = make_record(2, zoom=2)
    with pytest.raises(pv.ProvenanceError, match="leaf 2 \\(tile 't0002'\\)"):
        pv.build_provenance(records, store, previous=v1)
    with pytest.raises(pv.ProvenanceError, match="may only append"):
        pv.build_provenance([make_record(i) for i in range(3)], store, previous=v1)
    # nothing of version 1 was overwritten by the refused builds
    assert pv.Checkpoint.parse(store.get("provenance/checkpoint")).size == 5


def test_build_provenance_duplicate_tile(tmp_path):
    with pytest.raises(pv.ProvenanceError, match="appears twice"):
        pv.build_provenance([make_record(1), make_record(1)], LocalObjectStore(tmp_path))


@pytest.mark.parametrize(
    "source",
    [
        "/data/mosaic.fits",
        's3://b/k "quoted" \\ back\tslash\n\x01\x1f\x7f',
        "/données/\u20ac/\U0001f600/\ufb33.fits",
    ],
)
def test_fast_leaf_encoding_is_rfc8785(source):
    """leaf_bytes takes a json.dumps fast path; it must equal the generic RFC 8785 encoder."""
    rec = make_record(5, source=source, hdu="SCI", volunteers=["z", "\u00e9"])
    leaf = pv.leaf_bytes(rec)
    assert leaf == pv.canonical_json({**rec, "schema": pv.LEAF_SCHEMA})
    assert pv.parse_leaf(leaf)["source"] == source


def test_lone_surrogate_and_huge_int_are_refused():
    with pytest.raises(pv.ProvenanceError, match="surrogate"):
        pv.leaf_bytes(make_record(1, source="/x/\ud800.fits"))
    with pytest.raises(pv.ProvenanceError, match=r"2\*\*53"):
        pv.leaf_bytes(make_record(1, box=[0, 0, 2**60, 224]))


def test_checkpoint_origin_is_the_key_name_and_old_logs_keep_theirs(tmp_path):
    """C2SP tlog-checkpoint: origin == key name; a log begun as "hubcat/<name>" keeps verifying."""
    key = pv.generate_signing_key("example.org/hubcat")
    fresh = pv.build_provenance(
        [make_record(i) for i in range(3)], LocalObjectStore(tmp_path / "new"), signing_key=key
    )
    cp = pv.Checkpoint.parse(fresh["checkpoint"])
    assert cp.origin == "example.org/hubcat" == key.name
    assert [s.split()[1] for s in fresh["checkpoint"].splitlines() if s.startswith("\u2014")] == [
        key.name
    ]
    cp.verify(pv.load_verifier_key(fresh["public_key"]))
    # a catalogue begun by an earlier release, with the origin it used
    store = LocalObjectStore(tmp_path / "old")
    v1 = pv.build_provenance(
        [make_record(i) for i in range(3)], store, signing_key=key, origin="hubcat/" + key.name
    )
    v2 = pv.build_provenance(
        [make_record(i) for i in range(6)], store, signing_key=key, previous=v1
    )
    assert v2["origin"] == v1["origin"] == "hubcat/example.org/hubcat"
    pv.Checkpoint.parse(v2["checkpoint"]).verify(pv.load_verifier_key(v2["public_key"]))
    assert pv.verify_consistency(3, 6, v1["root"], v2["root"], v2["consistency_proof"])


def test_stored_leaves_are_byte_identical_under_rfc8785(catalogue_dir):
    """Leaves written by the catalogue's fast path are exactly the rfc8785 package's output."""
    import rfc8785

    files = json.loads((catalogue_dir / "manifest.json").read_text())["provenance"]["files"]
    leaves = [
        leaf
        for shard in files["leaf_shards"]
        for leaf in decode_leaves((catalogue_dir / shard["key"]).read_bytes())
    ]
    assert len(leaves) > 10
    for leaf in leaves:
        assert rfc8785.dumps(json.loads(leaf)) == leaf
        assert pv.canonical_json(json.loads(leaf)) == leaf
