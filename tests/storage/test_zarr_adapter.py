"""The Zarr v3 adapter over every ObjectStore implementation (local folder, S3)."""

from __future__ import annotations

import asyncio
import pickle

import numpy as np
import pytest
import zarr
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype

from hubcat.errors import StorageError
from hubcat.storage import LocalObjectStore, ObjectZarrStore, zarr_store

PROTO = default_buffer_prototype()


def run(coro):
    return asyncio.run(coro)


async def collect(aiter):
    return [x async for x in aiter]


@pytest.fixture
def zstore(store):
    return ObjectZarrStore(store)


def test_array_roundtrip(zstore, store):
    rng = np.random.default_rng(0)
    data = rng.random((5, 224, 224), dtype="float32")
    arr = zarr.create_array(
        zstore, name="m/zoom1", shape=data.shape, chunks=(2, 224, 224), dtype="f4"
    )
    arr[:] = data
    again = zarr.open_array(ObjectZarrStore(store), path="m/zoom1", mode="r")
    np.testing.assert_array_equal(again[:], data)
    np.testing.assert_array_equal(again[3], data[3])
    # chunk objects are plain keys of the object store
    assert "m/zoom1/zarr.json" in list(store.list("m/"))
    assert len([k for k in store.list("m/zoom1/c/")]) == 3


def test_group_attributes_and_listing(zstore):
    group = zarr.open_group(zstore, mode="w")
    group.attrs["augmentations"] = ["identity", "rot90"]
    group.create_array("a", shape=(4,), dtype="i4")[:] = [1, 2, 3, 4]
    group.create_array("b", shape=(2,), dtype="i4")
    reopened = zarr.open_group(zstore, mode="r")
    assert reopened.attrs["augmentations"] == ["identity", "rot90"]
    assert sorted(reopened.array_keys()) == ["a", "b"]
    assert sorted(run(collect(zstore.list_dir("")))) == ["a", "b", "zarr.json"]
    assert sorted(run(collect(zstore.list_dir("a")))) == ["c", "zarr.json"]


def test_sharded_array_reads_ranges(zstore):
    data = np.arange(8 * 16, dtype="u2").reshape(8, 16)
    arr = zarr.create_array(
        zstore, name="s", shape=data.shape, chunks=(2, 4), shards=(4, 8), dtype="u2"
    )
    arr[:] = data
    np.testing.assert_array_equal(
        zarr.open_array(zstore, path="s", mode="r")[1:3, 5:7], data[1:3, 5:7]
    )


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (None, b"0123456789"),
        (RangeByteRequest(2, 5), b"234"),
        (RangeByteRequest(8, 20), b"89"),
        (OffsetByteRequest(7), b"789"),
        (SuffixByteRequest(4), b"6789"),
        (SuffixByteRequest(40), b"0123456789"),
    ],
)
def test_byte_requests(zstore, request_, expected):
    run(zstore.set("k", PROTO.buffer.from_bytes(b"0123456789")))
    got = run(zstore.get("k", PROTO, request_))
    assert got.to_bytes() == expected


def test_missing_key_is_none(zstore):
    assert run(zstore.get("nope", PROTO)) is None
    assert run(zstore.get("nope", PROTO, RangeByteRequest(0, 3))) is None
    assert not run(zstore.exists("nope"))
    with pytest.raises(FileNotFoundError):
        run(zstore.getsize("nope"))


def test_partial_values_and_size(zstore):
    run(zstore.set("p", PROTO.buffer.from_bytes(b"abcdef")))
    out = run(zstore.get_partial_values(PROTO, [("p", RangeByteRequest(0, 2)), ("q", None)]))
    assert out[0].to_bytes() == b"ab"
    assert out[1] is None
    assert run(zstore.getsize("p")) == 6


def test_delete_and_delete_dir(zstore):
    for key in ("d/1", "d/2", "d/e/3", "keep"):
        run(zstore.set(key, PROTO.buffer.from_bytes(b"x")))
    run(zstore.delete("d/1"))
    assert not run(zstore.exists("d/1"))
    run(zstore.delete_dir("d"))
    assert sorted(run(collect(zstore.list()))) == ["keep"]
    assert sorted(run(collect(zstore.list_prefix("k")))) == ["keep"]


def test_set_if_not_exists(zstore):
    run(zstore.set_if_not_exists("once", PROTO.buffer.from_bytes(b"first")))
    run(zstore.set_if_not_exists("once", PROTO.buffer.from_bytes(b"second")))
    assert run(zstore.get("once", PROTO)).to_bytes() == b"first"


def test_read_only_refuses_writes(zstore):
    ro = zstore.with_read_only(True)
    assert ro.read_only
    with pytest.raises(ValueError, match="read-only"):
        run(ro.set("k", PROTO.buffer.from_bytes(b"x")))
    with pytest.raises(ValueError, match="read-only"):
        run(ro.delete("k"))


def test_equality_and_pickle(zstore, store):
    assert zstore == ObjectZarrStore(store)
    assert zstore != ObjectZarrStore(store, read_only=True)
    zarr.create_array(zstore, name="x", shape=(3,), dtype="f8")[:] = [1.0, 2.0, 3.0]
    clone = pickle.loads(pickle.dumps(zstore))
    assert clone == zstore
    np.testing.assert_array_equal(zarr.open_array(clone, path="x", mode="r")[:], [1.0, 2.0, 3.0])


def test_zarr_store_picks_the_adapter(store):
    z = zarr_store(store)
    if isinstance(store, LocalObjectStore):
        assert isinstance(z, zarr.storage.LocalStore)
    else:
        assert isinstance(z, ObjectZarrStore)
    zarr.create_array(z, name="y", shape=(2,), dtype="i1")[:] = [7, 8]
    np.testing.assert_array_equal(
        zarr.open_array(zarr_store(store, read_only=True), path="y")[:], [7, 8]
    )


def test_adapter_needs_an_object_store():
    with pytest.raises(StorageError, match="ObjectStore"):
        ObjectZarrStore("/tmp/not-a-store")
