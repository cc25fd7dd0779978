"""The run record: plan reconciliation, per-source records, attempts; local and on S3."""

from __future__ import annotations

import uuid

import pytest

from hubcat.storage import LocalObjectStore, open_object_store
from pipeline._state import RunPlan, RunState, SourceRecord
from pipeline._summary import RunSummary, SourceOutcome
from pipeline.errors import RunStateError


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def catalogue(request, tmp_path):
    if request.param == "local":
        return LocalObjectStore(tmp_path / "cat")
    server = request.getfixturevalue("s3_server")
    server.create_bucket("hubcat-state")
    return open_object_store(f"s3://hubcat-state/{uuid.uuid4().hex}")


def plan(sources, digest="d1", model="m"):
    return RunPlan(
        store="/t",
        model=model,
        weights=None,
        tiling={"zooms": [1]},
        tiling_digest=digest,
        sources=sources,
    )


def test_plan_is_recorded_and_extended(catalogue):
    state = RunState(catalogue)
    assert state.read_plan() is None
    _, new = state.reconcile(plan(["a", "b"]))
    assert new == ["a", "b"]
    _, new = state.reconcile(plan(["b", "c"]))
    assert new == ["c"]
    assert state.read_plan().sources == ["a", "b", "c"]
    assert list(catalogue.list("run/")) == ["run/plan.json"]


def test_other_parameters_are_refused(catalogue):
    state = RunState(catalogue)
    state.reconcile(plan(["a"]))
    with pytest.raises(RunStateError, match=r"tiling_digest: recorded 'd1', now 'd2'.*reprocess"):
        state.reconcile(plan(["a"], digest="d2"))
    with pytest.raises(RunStateError, match="model"):
        state.reconcile(plan(["a"], model="other"))


def test_source_records(catalogue):
    state = RunState(catalogue)
    state.reconcile(plan(["s3://b/x.fits", "/data/y.fits"]))
    assert state.source("s3://b/x.fits").status == "pending"
    state.write_source(SourceRecord("s3://b/x.fits", "failed", "truncated", attempts=1))
    records = state.sources()
    assert [r.status for r in records] == ["failed", "pending"]
    assert records[0].reason == "truncated" and records[0].updated


def test_attempts(catalogue):
    state = RunState(catalogue)
    assert state.next_attempt() == 1
    state.write_attempt(1, {"attempt": 1, "finished": None})
    assert state.next_attempt() == 2
    state.write_attempt(2, {"attempt": 2, "finished": "now"})
    assert [a["attempt"] for a in state.attempts()] == [1, 2]


def test_corrupt_plan_is_reported(tmp_path):
    store = LocalObjectStore(tmp_path)
    store.put("run/plan.json", b"{not json")
    with pytest.raises(RunStateError, match=r"plan\.json is not valid JSON"):
        RunState(store).read_plan()


def test_summary_render_and_json():
    s = RunSummary(catalogue="/c", tile_store="/c/tiles", model="m", weights_sha256="ab" * 32)
    s.sources = [
        SourceOutcome("/a.fits", "done", tiles=4, seconds=1.0),
        SourceOutcome("/b.fits", "failed", "/b.fits: no celestial WCS"),
        SourceOutcome("/c.fits", "skipped", "already tiled by an earlier run", tiles=2),
    ]
    s.units, s.units_reused, s.units_computed = 3, 1, 2
    s.merkle_root = "00" * 32
    s.stage_seconds = {"tiling": 1.0, "embedding": 2.0}
    text = s.render()
    assert "1 done, 1 skipped, 1 failed" in text
    assert "no celestial WCS" in text
    assert "2 computed by this run, 1 already done (not recomputed)" in text
    d = s.to_dict()
    assert d["counts"] == {"sources": 3, "done": 1, "skipped": 1, "failed": 1}
    assert d["merkle_root"] == "00" * 32
    assert not s.ok  # one source failed
