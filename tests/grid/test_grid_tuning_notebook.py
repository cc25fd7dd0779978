"""The tuning notebook: tune on a catalogue's tiles, reprocess, neighbours before and after."""

from __future__ import annotations

import pytest

from tests._notebooks import assert_outputs_stored, run_notebook

NOTEBOOK = "tuning.ipynb"


def test_notebook_is_stored_executed():
    assert_outputs_stored(NOTEBOOK, images=2)


@pytest.mark.notebook
@pytest.mark.grid
@pytest.mark.slow
def test_tuning_notebook_runs(hst_dir, tmp_path, monkeypatch):
    from pipeline import run_pipeline

    # a catalogue of its own (reprocess adds a model version to it), with enough tiles for two
    # training units of 16: real COSMOS F814W tiles at stride 112
    copy = tmp_path / "cat"
    source = hst_dir / "galsim_cosmos_147246.0_150.416558_1.998697_masknoise.fits"
    run_pipeline([str(source)], str(copy), zooms=(1,), stride=112, workers=1, progress=False)
    monkeypatch.setenv("HUBCAT_CATALOGUE", str(copy))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    text = run_notebook(NOTEBOOK, tmp_path, timeout=900)
    assert "exit status 0" in text
    assert "tiles_merkle_root" in text and "model version 2" in text
    assert "neighbours in common:" in text
