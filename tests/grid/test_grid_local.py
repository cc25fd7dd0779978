"""run_units on a LocalCluster with real worker processes; resuming; status."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grid import GridConfig, run_units
from grid._status import grid_status

pytestmark = [pytest.mark.grid, pytest.mark.slow]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    from grid._selftest import synthetic_tile_store

    store = synthetic_tile_store(tmp_path_factory.mktemp("local"), units=2, unit_size=1, seed=3)
    events = []
    report = run_units(
        store, config=GridConfig(n_workers=1), progress=lambda *event: events.append(event)
    )
    # the library reports (units accepted, then the summary as a message) and prints nothing
    assert ("units", 2, 2, "") in events and events[-1] == ("message", 0, None, str(report))
    return store, report


def test_local_run_accepts_every_unit(local_run, capsys):
    from embeddings import EmbeddingStore, embed_tiles, load_model

    store, report = local_run
    assert (report.units_planned, report.units_accepted, report.units_failed) == (2, 2, 0)
    assert report.replicas_run == 2 and report.min_quorum == 1
    assert "2 accepted" in str(report)
    model = load_model()
    emb = EmbeddingStore(store, model)
    for unit in store.units():
        _, got = emb.read(unit.unit_key)
        _, tiles = store.read_unit(unit.unit_key)
        assert np.min(np.sum(got * embed_tiles(model, tiles), axis=1)) >= GridConfig().min_cosine
        rec = emb.record(unit.unit_key)
        # whichever local process computed it, the operator's machine is one identity, so
        # the provenance (and the Merkle root) of a local run does not depend on scheduling
        assert list(rec.volunteers) == ["local"]


def test_second_run_resumes_without_recomputing(local_run):
    store, _ = local_run
    again = run_units(store, config=GridConfig(n_workers=1), progress=False)
    assert (again.units_planned, again.units_skipped, again.replicas_run) == (0, 2, 0)


def test_status_counts_units_and_credit(local_run):
    store, report = local_run
    status = grid_status(store.uri)
    counts = status["units"][report.model_digest]
    assert counts["accepted"] == 2 and counts["pending"] == 0
    assert status["ledger_ok"]
    (vol,) = status["volunteers"].values()
    assert vol["valid"] == 2 and vol["credit"] > 0
    json.dumps(status, default=str)


def test_no_workers_stops_cleanly_then_resumes_with_adaptive_replication(tmp_path):
    """All workers lost: the run stops cleanly with its units pending; it resumes when workers
    come back, and volunteers that earned trust then get single replicas plus canaries."""
    from distributed import Client, LocalCluster

    from grid import CreditLedger, UnitRecords, load_ledger_key
    from grid._selftest import synthetic_tile_store
    from hubcat.storage import open_object_store

    store = synthetic_tile_store(tmp_path, units=3, unit_size=1, seed=5)
    config = GridConfig(
        min_quorum=2,
        idle_timeout=2,
        trust_after=1,
        spot_check_rate=0.0,
        canary_rate=1.0,
        max_in_flight=1,
    )
    with (
        LocalCluster(n_workers=0, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        stopped = run_units(store, client=client, config=config, progress=False)
        assert (stopped.units_planned, stopped.units_accepted, stopped.units_failed) == (3, 0, 3)
        assert "re-run the same command" in str(stopped)
        root = open_object_store(store.uri).child(f"grid/{stopped.model_digest}")
        assert [r["state"] for r in UnitRecords(root).all()] == ["pending"] * 3

        cluster.scale(2)
        client.wait_for_workers(2, timeout=180)
        resumed = run_units(store, client=client, config=config, progress=False)
    assert (resumed.units_planned, resumed.units_accepted, resumed.units_failed) == (3, 3, 0)
    records = UnitRecords(root).all()
    singles = [r for r in records if r["accepted"]["single"]]
    assert len(singles) == 2  # the first unit made both volunteers trusted
    assert all(len(r["accepted"]["volunteers"]) == 1 for r in singles)
    assert resumed.canaries_run == 2 and not resumed.liars
    # quorum 2, then a single replica twice, plus the canaries that finished before the run did
    assert 4 <= resumed.replicas_run <= 6
    ledger = CreditLedger(
        open_object_store(store.uri).child("grid/ledger"),
        public_key=load_ledger_key().public_key(),
    )
    assert {e["event"] for e in ledger.entries()} == {"valid"}
