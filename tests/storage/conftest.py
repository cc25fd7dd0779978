"""One store fixture, parametrized over every ObjectStore implementation."""

from __future__ import annotations

import uuid

import pytest

from hubcat.storage import LocalObjectStore, open_object_store

BUCKET = "hubcat-store-tests"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request, tmp_path):
    """A fresh, empty store: a local folder, or a new prefix on the loopback S3 server."""
    if request.param == "local":
        return LocalObjectStore(tmp_path / "store")
    server = request.getfixturevalue("s3_server")
    server.create_bucket(BUCKET)
    return open_object_store(f"s3://{BUCKET}/{uuid.uuid4().hex}", endpoint_url=server.endpoint_url)
