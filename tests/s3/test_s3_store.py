"""S3ObjectStore against moto's real S3 server: retries, errors, anonymity, paging, URLs."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid

import pytest

from hubcat.errors import StorageError, StoragePermissionError, StoreNotFoundError
from hubcat.storage import S3ObjectStore, S3Options, open_object_store, split_s3_uri
from tests._s3_support import mast_key

pytestmark = pytest.mark.s3

BUCKET = "hubcat-s3-tests"
DATA = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture
def prefix(s3_server):
    s3_server.create_bucket(BUCKET)
    return uuid.uuid4().hex


def via(proxy, prefix, **options):
    """A store that talks to moto through the fault proxy (fast retries)."""
    options.setdefault("max_attempts", 4)
    return S3ObjectStore.from_uri(
        f"s3://{BUCKET}/{prefix}", endpoint_url=proxy.endpoint_url, **options
    )


def test_uri_parsing():
    assert split_s3_uri("s3://b/p/q/") == ("b", "p/q")
    assert split_s3_uri("s3://b") == ("b", "")
    with pytest.raises(StorageError, match="not an S3 URI"):
        split_s3_uri("http://b/p")
    with pytest.raises(StorageError, match="unknown S3 option"):
        S3ObjectStore.from_uri("s3://b/p", endpont_url="x")
    with pytest.raises(StorageError, match="retry mode"):
        S3Options(retry_mode="sometimes")


def test_endpoint_from_environment(s3_server, prefix):
    # the session fixture exports AWS_ENDPOINT_URL; no endpoint_url option is given here
    store = open_object_store(f"s3://{BUCKET}/{prefix}")
    store.put("env.txt", b"via AWS_ENDPOINT_URL")
    raw = s3_server.client().get_object(Bucket=BUCKET, Key=f"{prefix}/env.txt")["Body"].read()
    assert raw == b"via AWS_ENDPOINT_URL"


def test_throttling_is_retried(proxy, prefix):
    store = via(proxy, prefix)
    store.put("t.bin", DATA)
    proxy.add("throttle", f"{prefix}/t.bin", times=2)
    assert store.get("t.bin") == DATA
    gets = [r for r in proxy.requests if r.method == "GET" and r.path.endswith("t.bin")]
    assert len(gets) == 3  # two 503 SlowDown answers, then success


def test_server_error_is_retried_on_writes_too(proxy, prefix):
    store = via(proxy, prefix)
    proxy.add("error500", f"{prefix}/w.bin", method="PUT", times=1)
    store.put("w.bin", b"written")
    assert store.get("w.bin") == b"written"


def test_persistent_throttling_gives_a_clear_error(proxy, prefix):
    store = via(proxy, prefix, max_attempts=2)
    store.put("busy.bin", b"x")
    proxy.add("throttle", f"{prefix}/busy.bin", times=10)
    with pytest.raises(StorageError, match=rf"s3://{BUCKET}/{prefix}/busy.bin.*SlowDown"):
        store.get("busy.bin")


def test_forbidden_names_the_key(proxy, prefix):
    store = via(proxy, prefix)
    proxy.add("forbidden", "secret.fits", times=5)
    with pytest.raises(
        StoragePermissionError, match=rf"access denied to s3://{BUCKET}/{prefix}/secret.fits"
    ) as info:
        store.get("secret.fits")
    assert isinstance(info.value, PermissionError)


def test_missing_key_and_bucket_name_the_key(s3_server, prefix):
    store = S3ObjectStore.from_uri(f"s3://{BUCKET}/{prefix}")
    with pytest.raises(
        StoreNotFoundError, match=rf"s3://{BUCKET}/{prefix}/gone.fits does not exist"
    ):
        store.get("gone.fits")
    nobucket = S3ObjectStore.from_uri("s3://no-such-bucket-hubcat/x")
    with pytest.raises(StoreNotFoundError, match="no such bucket"):
        nobucket.get("k")
    assert not nobucket.exists("k")


def test_truncated_body_is_fetched_again(proxy, prefix):
    store = via(proxy, prefix)
    store.put("big.bin", DATA)
    proxy.add("truncate", f"{prefix}/big.bin", times=1)
    assert store.get("big.bin") == DATA
    assert sum(r.method == "GET" for r in proxy.requests) == 2


def test_ranged_get_transfers_only_the_range(proxy, prefix):
    store = via(proxy, prefix)
    store.put("h.fits", DATA)
    assert store.get_range("h.fits", 2880, 100) == DATA[2880:2980]
    get = next(r for r in proxy.requests if r.method == "GET")
    assert get.headers.get("Range") == "bytes=2880-2979"


def test_listing_is_paginated(proxy, prefix):
    store = via(proxy, prefix, list_page_size=3)
    keys = [f"k/{i:02d}" for i in range(10)]
    for key in keys:
        store.put(key, b"")
    proxy.clear()
    assert list(store.list("k/")) == keys
    lists = [r for r in proxy.requests if r.method == "GET" and "list-type=2" in r.query]
    assert len(lists) == 4  # 3 + 3 + 3 + 1


def test_anonymous_reads_of_a_public_bucket(s3_server, proxy, hst_dir):
    s3_server.create_bucket("stpubdata")
    key = mast_key("j8bt06nyq", "flt")
    client = s3_server.client()
    client.upload_file(
        str(hst_dir / "j8bt06nyq_flt.fits"), "stpubdata", key, ExtraArgs={"ACL": "public-read"}
    )
    client.put_object(
        Bucket="stpubdata", Key="hst/public/private.fits", Body=b"SIMPLE"
    )  # not public
    store = S3ObjectStore.from_uri("s3://stpubdata/hst/public", endpoint_url=proxy.endpoint_url)
    assert store.anonymous  # public bucket: unsigned requests, whatever the environment holds
    header = store.get_range("j8bt/j8bt06nyq/j8bt06nyq_flt.fits", 0, 2880)
    assert header.startswith(b"SIMPLE  =                    T")
    assert all("Authorization" not in r.headers for r in proxy.requests)
    # a real 403 from the server: an object that is not public, read anonymously
    with pytest.raises(
        StoragePermissionError, match=r"access denied to s3://stpubdata/hst/public/private\.fits"
    ):
        store.get("private.fits")
    with pytest.raises(StoragePermissionError, match="anonymous"):
        store.presigned_get_url("j8bt/j8bt06nyq/j8bt06nyq_flt.fits")


def test_anonymous_store_refuses_writes_it_cannot_sign(s3_server, prefix):
    store = S3ObjectStore.from_uri(f"s3://{BUCKET}/{prefix}", read_only=True)
    with pytest.raises(StorageError, match="read-only"):
        store.put("k", b"x")
    with pytest.raises(StorageError, match="read-only"):
        store.delete("k")


def test_presigned_urls_work_without_credentials(s3_server, prefix):
    store = S3ObjectStore.from_uri(f"s3://{BUCKET}/{prefix}")
    put_url = store.presigned_put_url("results/unit-0.npy", expires=600)
    request = urllib.request.Request(
        put_url, data=b"vectors", method="PUT", headers={"Content-Type": "application/octet-stream"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
    assert store.get("results/unit-0.npy") == b"vectors"
    with urllib.request.urlopen(store.presigned_get_url("results/unit-0.npy"), timeout=10) as resp:
        assert resp.read() == b"vectors"
    with pytest.raises(StorageError, match="7 days"):
        store.presigned_get_url("k", expires=10**7)


def test_child_keeps_endpoint_and_options(proxy, prefix):
    store = via(proxy, prefix, list_page_size=2)
    child = store.child("a/b")
    assert child.options == store.options
    assert child.uri == f"s3://{BUCKET}/{prefix}/a/b"
    child.put("x", b"1")
    assert store.get("a/b/x") == b"1"
    assert any(r.path.endswith("a/b/x") for r in proxy.requests)


def test_ensure_bucket(s3_server):
    name = f"hubcat-new-{uuid.uuid4().hex[:8]}"
    store = S3ObjectStore.from_uri(f"s3://{name}/p")
    store.ensure_bucket()
    store.ensure_bucket()  # idempotent
    store.put("k", b"v")
    assert store.get("k") == b"v"
