"""Pre-signed S3 URLs: workers without credentials read tiles and write results over plain HTTP."""

from __future__ import annotations

import contextlib
import os
import time
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from grid import GridConfig, run_units
from grid.errors import GridConfigError, GridError

pytestmark = [pytest.mark.grid, pytest.mark.s3]

_CREDENTIALS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


@contextlib.contextmanager
def _without_credentials():
    """Worker processes spawned inside this block inherit no AWS credentials nor endpoint."""
    saved = {k: os.environ.pop(k) for k in _CREDENTIALS if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


@pytest.fixture(scope="module")
def s3_tile_store(s3_server, tmp_path_factory):
    from hubcat.synthetic import write_synthetic_mosaic
    from tiling import TileStore, TilingConfig

    s3_server.create_bucket("grid-presigned")
    fits_path = write_synthetic_mosaic(
        tmp_path_factory.mktemp("presigned") / "m.fits", (224, 448), seed=7, n_sources=60
    )
    store = TileStore.create("s3://grid-presigned/tiles", TilingConfig(zooms=(1,), unit_size=1))
    store.add_mosaic(fits_path)
    return store


def test_presigned_urls_are_scoped_and_expire(s3_tile_store):
    from grid._presign import chunk_layout, presign_replica
    from grid._results import ResultStore

    cfg = GridConfig(replica_timeout=30, url_margin=90)
    unit = s3_tile_store.units()[1]
    layout = chunk_layout(s3_tile_store, unit)
    assert layout["key"] == f"tiles/{unit.mosaic_id}/z1/c/1/0/0" and layout["offset"] == 0
    results = ResultStore(s3_tile_store.objects.child("grid/x/results"))
    urls = presign_replica(s3_tile_store.objects, results, layout, "u", "r1", cfg.url_expires)
    for name in ("get_url", "put_url", "receipt_url"):
        query = parse_qs(urlparse(urls[name]).query)
        if "X-Amz-Expires" in query:  # SigV4
            assert query["X-Amz-Expires"] == ["120"] and "X-Amz-Signature" in query
        else:  # SigV2 query signing: an absolute expiry time
            assert abs(int(query["Expires"][0]) - time.time() - 120) < 30
            assert "Signature" in query
    assert urlparse(urls["put_url"]).path.endswith("/tiles/grid/x/results/u/r1.f32")


def test_presigned_mode_needs_an_s3_store(small_tile_store):
    with pytest.raises(GridConfigError, match="not under s3://"):
        run_units(small_tile_store, config=GridConfig(presigned_urls=True), progress=False)


def test_worker_refuses_a_chunk_altered_in_the_bucket(s3_tile_store):
    from grid._presign import chunk_layout, fetch_unit

    unit = s3_tile_store.units()[0]
    layout = chunk_layout(s3_tile_store, unit)
    url = s3_tile_store.objects.presigned_get_url(layout["key"], 60)
    tiles = fetch_unit({**layout, "get_url": url}, 1, unit.sha256, unit.unit_key)
    _, expected = s3_tile_store.read_unit(unit.unit_key)
    np.testing.assert_array_equal(tiles, expected)
    with pytest.raises(GridError, match="altered"):
        fetch_unit({**layout, "get_url": url}, 1, "0" * 64, unit.unit_key)


@pytest.mark.slow
def test_run_units_with_presigned_urls_on_workers_without_credentials(s3_tile_store):
    from distributed import Client, LocalCluster

    from embeddings import EmbeddingStore, embed_tiles, load_model

    def worker_state():
        import sys

        keys = [k for k in _CREDENTIALS if k in os.environ]
        return keys, "boto3" in sys.modules or "botocore" in sys.modules

    config = GridConfig(min_quorum=1, presigned_urls=True, idle_timeout=120)
    with _without_credentials():
        cluster = LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        )
    with cluster, Client(cluster) as client:
        report = run_units(s3_tile_store, client=client, config=config, progress=False)
        states = client.run(worker_state)
    assert (report.units_planned, report.units_accepted, report.units_failed) == (2, 2, 0)
    assert report.replicas_invalid == report.replicas_failed == 0
    # the worker never saw a credential and never loaded boto3: it only had the URLs
    assert list(states.values()) == [([], False)]
    model = load_model()
    emb = EmbeddingStore(s3_tile_store, model)
    for unit in s3_tile_store.units():
        _, got = emb.read(unit.unit_key)
        _, tiles = s3_tile_store.read_unit(unit.unit_key)
        cos = np.sum(got * embed_tiles(model, tiles), axis=1)
        assert np.min(cos) >= config.min_cosine
