"""run_pipeline from Python on bad local inputs: every bad source is reported, none stops the run."""

from __future__ import annotations

import json

import pytest

from pipeline import run_pipeline
from pipeline.errors import RunStateError, SourceSpecError

BAD = {
    "drizzlepac_sample_mvm_drc_HEADER_ONLY.fits": "no valid pixel",
    "j8bt06nyq_flt.fits": "drizzled",
}


@pytest.fixture(scope="module")
def bad_run(hst_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bad") / "catalogue"
    sources = [str(hst_dir / name) for name in BAD] + [str(hst_dir / "no-such-file.fits")]
    return out, run_pipeline(sources, out, zooms=(1,), unit_size=2, progress=False)


def test_every_bad_source_is_reported_with_its_reason(bad_run, hst_dir):
    out, summary = bad_run
    failed = {f.source.rsplit("/", 1)[-1]: f.reason for f in summary.failed}
    assert set(failed) == {*BAD, "no-such-file.fits"}
    for name, words in BAD.items():
        assert name in failed[name] and words in failed[name], failed[name]
    assert "does not exist" in failed["no-such-file.fits"]
    assert summary.merkle_root is None and not summary.ok
    assert summary.tiles == 0 and summary.units == 0
    record = json.loads((out / "run" / "summary.json").read_text())
    assert record["counts"]["failed"] == 3


def test_rerun_skips_failed_sources_unless_asked(bad_run):
    out, _ = bad_run
    again = run_pipeline([], out, progress=False)
    assert [s.status for s in again.sources] == ["skipped", "skipped"]
    assert all("--retry-failed" in s.reason for s in again.sources)
    retried = run_pipeline([], out, retry_failed=True, progress=False)
    assert [s.status for s in retried.sources] == ["failed", "failed"]
    assert again.attempt == 2 and retried.attempt == 3


def test_other_tiling_parameters_are_refused(bad_run):
    out, _ = bad_run
    with pytest.raises(RunStateError, match="tiling_digest"):
        run_pipeline([], out, zooms=(1, 2), progress=False)


def test_malformed_mast_id_fails_before_any_work(tmp_path):
    with pytest.raises(SourceSpecError, match="9-character"):
        run_pipeline([], tmp_path / "c", mast=["nope"], progress=False)
    assert not (tmp_path / "c").exists()
