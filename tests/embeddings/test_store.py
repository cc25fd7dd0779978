"""EmbeddingStore on a local folder and on S3: atomic units, checksums, results never replaced."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from embeddings import EmbeddingStore, EmbeddingStoreError

DIGEST = "ab" * 32
BUCKET = "hubcat-embedding-tests"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def root(request, tmp_path) -> str:
    """URI of an empty tile-store root: a local folder or a prefix on the loopback S3 server."""
    if request.param == "local":
        return str(tmp_path / "tiles")
    server = request.getfixturevalue("s3_server")
    server.create_bucket(BUCKET)
    return f"s3://{BUCKET}/{uuid.uuid4().hex}"


def _vectors(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_write_has_read_all(root: str):
    store = EmbeddingStore(root, DIGEST)
    assert store.uri.endswith(f"embeddings/{DIGEST}")
    assert not store.has("m1/z1/0")
    a, b = _vectors(3, seed=1), _vectors(2, seed=2)
    sha = store.write("m1/z1/0", ["t0", "t1", "t2"], a, volunteers=["alice", "bob"])
    store.write("m1/z1/1", ["t3", "t4"], b)
    assert store.has("m1/z1/0") and store.has("m1/z1/1")
    assert store.unit_keys() == ["m1/z1/0", "m1/z1/1"]
    ids, vecs, vols = EmbeddingStore(root, DIGEST).read_all()
    assert ids == ["t0", "t1", "t2", "t3", "t4"]
    np.testing.assert_array_equal(vecs, np.concatenate([a, b]))
    assert vols == [("alice", "bob")] * 3 + [()] * 2
    assert store.record("m1/z1/0").sha256 == sha
    # same result again is a no-op; a different one is refused and the first stays intact
    assert store.write("m1/z1/0", ["t0", "t1", "t2"], a) == sha
    with pytest.raises(EmbeddingStoreError, match="never replaced"):
        store.write("m1/z1/0", ["t0", "t1", "t2"], _vectors(3, seed=9))
    np.testing.assert_array_equal(store.read("m1/z1/0")[1], a)


def test_other_digest_is_another_store(root: str):
    EmbeddingStore(root, DIGEST).write("u", ["t"], _vectors(1))
    other = EmbeddingStore(root, "cd" * 32)
    assert not other.has("u")
    ids, vecs, _ = other.read_all()
    assert ids == [] and vecs.shape == (0, 0)


def test_a_unit_without_its_record_is_invisible(root: str):
    """The vectors object lands first; until the record is written the unit does not exist."""
    store = EmbeddingStore(root, DIGEST)
    store.root.put("vectors/" + "0" * 64 + ".f32", b"\0" * 32)
    assert store.unit_keys() == []
    assert store.read_all()[0] == []


def test_corrupt_vectors_are_detected(root: str):
    store = EmbeddingStore(root, DIGEST)
    sha = store.write("u", ["t0", "t1"], _vectors(2))
    key = f"vectors/{sha}.f32"
    raw = bytearray(store.root.get(key))
    raw[0] ^= 1
    store.root.put(key, bytes(raw))
    with pytest.raises(EmbeddingStoreError, match="sha256"):
        store.read_all()


def test_missing_vectors_are_detected(root: str):
    store = EmbeddingStore(root, DIGEST)
    sha = store.write("u", ["t0"], _vectors(1))
    store.root.delete(f"vectors/{sha}.f32")
    with pytest.raises(EmbeddingStoreError, match="missing"):
        store.read("u")


@pytest.mark.parametrize(
    ("ids", "vectors", "match"),
    [
        (["a"], np.zeros((2, 4), np.float32), "2 vectors for 1 tile ids"),
        (["a", "b"], np.zeros((2, 4), np.float64), "float32"),
        (["a", "a"], np.zeros((2, 4), np.float32), "duplicate"),
        (["a"], np.full((1, 4), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_writes_are_refused(tmp_path, ids, vectors, match):
    store = EmbeddingStore(tmp_path, DIGEST)
    with pytest.raises(EmbeddingStoreError, match=match):
        store.write("u", ids, vectors)
    assert not store.has("u")


def test_bad_digest(tmp_path):
    with pytest.raises(EmbeddingStoreError, match="not a lowercase hex digest"):
        EmbeddingStore(tmp_path, "../escape")


def test_model_description_is_recorded(tmp_path, model):
    store = EmbeddingStore(tmp_path, model)
    assert store.model_digest == model.digest
    info = store.model_info()
    assert info["weights_sha256"] == model.weights_sha256
    assert info["record"]["augmentations"][0] == "identity"
