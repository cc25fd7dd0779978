"""The shared ObjectStore test suite: every implementation (local folder, S3) must pass it."""

from __future__ import annotations

import pickle

import pytest

from hubcat.errors import StorageError, StoreNotFoundError
from hubcat.storage import ObjectStore, open_object_store

PAYLOAD = bytes(range(256)) * 5  # 1280 bytes, every byte value


def test_is_object_store(store):
    assert isinstance(store, ObjectStore)
    assert store.supports_writes
    assert repr(store).startswith(type(store).__name__)


def test_put_get_roundtrip(store):
    store.put("a/b/c.bin", PAYLOAD)
    assert store.get("a/b/c.bin") == PAYLOAD
    assert store.size("a/b/c.bin") == len(PAYLOAD)


def test_put_replaces(store):
    store.put("k", b"old value, longer")
    store.put("k", b"new")
    assert store.get("k") == b"new"
    assert store.size("k") == 3


def test_empty_object(store):
    store.put("empty", b"")
    assert store.exists("empty")
    assert store.get("empty") == b""
    assert store.size("empty") == 0


def test_get_missing_names_the_key(store):
    with pytest.raises(StoreNotFoundError, match="no/such/key") as info:
        store.get("no/such/key")
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, StorageError)


def test_size_and_range_of_missing_key(store):
    with pytest.raises(StoreNotFoundError, match=r"missing\.bin"):
        store.size("missing.bin")
    with pytest.raises(StoreNotFoundError, match=r"missing\.bin"):
        store.get_range("missing.bin", 0, 10)


@pytest.mark.parametrize(
    ("start", "length", "expected"),
    [
        (0, 10, PAYLOAD[:10]),
        (300, 17, PAYLOAD[300:317]),
        (1270, 100, PAYLOAD[1270:]),  # fewer bytes at the end
        (1280, 10, b""),  # exactly at the end
        (5000, 10, b""),  # past the end
        (7, 0, b""),
    ],
)
def test_get_range(store, start, length, expected):
    store.put("r.bin", PAYLOAD)
    assert store.get_range("r.bin", start, length) == expected


def test_exists(store):
    assert not store.exists("x/y")
    store.put("x/y", b"1")
    assert store.exists("x/y")


def test_list_sorted_and_by_prefix(store):
    keys = ["b/2", "a/1", "a/0", "c", "a/sub/9", "ab"]
    for key in keys:
        store.put(key, key.encode())
    assert list(store.list()) == sorted(keys)
    assert list(store.list("a/")) == ["a/0", "a/1", "a/sub/9"]
    assert list(store.list("a")) == ["a/0", "a/1", "a/sub/9", "ab"]
    assert list(store.list("zzz")) == []


def test_list_of_empty_store(store):
    assert list(store.list()) == []


def test_delete(store):
    store.put("d/1", b"1")
    store.put("d/2", b"2")
    store.delete("d/1")
    assert not store.exists("d/1")
    assert list(store.list()) == ["d/2"]
    store.delete("d/1")  # deleting a missing key is not an error


def test_child_store_sees_the_same_bytes(store):
    child = store.child("sub/dir")
    child.put("k.txt", b"child")
    assert store.get("sub/dir/k.txt") == b"child"
    assert list(child.list()) == ["k.txt"]
    assert child.uri.rstrip("/").endswith("sub/dir")


def test_reopen_from_uri(store, request):
    store.put("meta.json", b"{}")
    options = {}
    if store.uri.startswith("s3://"):
        options["endpoint_url"] = request.getfixturevalue("s3_server").endpoint_url
    again = open_object_store(store.uri, **options)
    assert type(again) is type(store)
    assert again.get("meta.json") == b"{}"


def test_pickles(store):
    store.put("p", b"pickled")
    clone = pickle.loads(pickle.dumps(store))
    assert clone.uri == store.uri
    assert clone.get("p") == b"pickled"


def test_key_escaping_the_store_is_refused(store):
    with pytest.raises(StorageError, match=r"\.\."):
        store.put("../outside", b"x")
    with pytest.raises(StorageError, match=r"\.\."):
        store.get("a/../../outside")


def test_binary_key_names(store):
    key = "tiles/j8bt06nyq_drz.fits/zoom=2/c.0.0"
    store.put(key, b"\x00\xff" * 100)
    assert store.get(key) == b"\x00\xff" * 100
    assert list(store.list("tiles/")) == [key]
