"""The operator's replica endpoint and the result store's size checks, attacked over HTTP."""

from __future__ import annotations

import hashlib
import http.client
import json
import resource
import urllib.parse

import numpy as np
import pytest

from grid import InvalidResultError, ResultStore
from grid._endpoint import ReplicaEndpoint
from grid._presign import fetch_unit, upload_result
from grid._records import slug
from hubcat.storage import LocalObjectStore


@pytest.fixture
def endpoint(small_tile_store, tmp_path):
    results = ResultStore(LocalObjectStore(tmp_path / "results"))
    ep = ReplicaEndpoint(small_tile_store, results)
    yield ep, small_tile_store, results
    ep.close()


def _grant(ep, store, replica="r1", dim=8):
    unit = store.units()[0]
    return unit, ep.grant(unit, slug(unit.unit_key), replica, dim, expires=60)


def _put_headers_only(url: str, length: int, body: bytes = b"") -> int:
    """Claim ``length`` bytes but send only ``body``: the answer must not wait for the rest."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.putrequest("PUT", parts.path)
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    if body:
        conn.send(body)
    status = conn.getresponse().status
    conn.close()
    return status


def test_a_replica_round_trip_through_its_capabilities(endpoint):
    ep, store, results = endpoint
    unit, transfer = _grant(ep, store)
    tiles = fetch_unit(
        {**transfer, "endpoint": True}, len(unit.tile_ids), unit.sha256, unit.unit_key
    )
    _, want = store.read_unit(unit.unit_key)
    assert np.array_equal(tiles, want)
    vectors = np.eye(len(unit.tile_ids), 8, dtype=np.float32)
    sha, _shape, _ = upload_result({**transfer, "endpoint": True}, vectors)
    assert ep.received_sha256("r1") == sha == hashlib.sha256(vectors.tobytes()).hexdigest()
    receipt, data = ep.take("r1")
    assert json.loads(receipt)["sha256"] == sha and data == vectors.tobytes()
    stored = results.read(slug(unit.unit_key), "r1")
    assert stored[1] == vectors.tobytes()


def test_capabilities_are_single_use_and_cannot_be_guessed_or_swapped(endpoint):
    ep, store, _ = endpoint
    unit, mine = _grant(ep, store, "mine")
    _, theirs = _grant(ep, store, "theirs")
    body = np.zeros((len(unit.tile_ids), 8), np.float32).tobytes()

    def put(url, data=body):
        parts = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request("PUT", parts.path, body=data)
        return conn.getresponse().status

    assert put(mine["put_url"]) == 200
    assert put(mine["put_url"]) == 403  # used
    base = mine["put_url"].rsplit("/", 1)[0]
    assert put(base + "/" + "A" * 43) == 403  # guessed
    assert put(mine["get_url"]) == 405  # a read capability cannot write
    assert (
        put(mine["receipt_url"].replace("/c/", "/r/")) == 403
    )  # a receipt token is not a vector one
    assert put(theirs["put_url"].replace("/r/", "/u/")) == 403  # a write token cannot read
    ep.settle("theirs")
    assert put(theirs["put_url"]) == 403  # settled: gone
    parts = urllib.parse.urlsplit(mine["get_url"])
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", "/r/")
    assert conn.getresponse().status == 404  # nothing can be listed


def test_an_oversized_upload_is_refused_before_its_body_is_read(endpoint):
    """Attack 8: a 2 GiB result and a 64 MiB receipt are refused from their headers alone."""
    ep, store, _ = endpoint
    _, transfer = _grant(ep, store)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert _put_headers_only(transfer["put_url"], 2 * 2**30) == 413
    assert _put_headers_only(transfer["receipt_url"], 64 * 2**20) == 413
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 50
    assert ep.received_sha256("r1") is None


def test_stored_results_are_size_checked_before_they_are_read(tmp_path):
    """A 2 GiB vector file and a 64 MiB receipt in the result store are refused unread."""
    store = LocalObjectStore(tmp_path)
    results = ResultStore(store)
    vkey, rkey = ResultStore.keys("u", "r")
    path = tmp_path / vkey
    path.parent.mkdir(parents=True)
    with open(path, "wb") as fh:
        fh.truncate(2 * 2**30)  # sparse: no disk used
    (tmp_path / rkey).write_text("{}")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InvalidResultError, match="not read") as err:
        results.read("u", "r", max_bytes=5120)
    assert err.value.reason == "shape"
    with open(tmp_path / rkey, "wb") as fh:
        fh.truncate(64 * 2**20)
    with pytest.raises(InvalidResultError, match="receipt of 67108864 bytes") as err:
        results.read("u", "r", max_bytes=5120)
    assert err.value.reason == "receipt"
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 50


def test_the_distributed_release_is_the_one_the_wire_was_written_for():
    """The reader in grid._wire mirrors distributed's TCP.read: pinned, and the pin tested."""
    import tomllib

    import distributed
    from packaging.specifiers import SpecifierSet

    from grid._wire import DISTRIBUTED_RANGE
    from tests.conftest import REPO

    spec = SpecifierSet(",".join(DISTRIBUTED_RANGE))
    assert distributed.__version__ in spec
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("distributed")]
    assert SpecifierSet(pin.removeprefix("distributed")) == spec
