"""The tuning notebook: tune on a catalogue's tiles, reprocess, neighbours before and after."""

from __future__ import annotations

import shutil

import pytest

from tests._notebooks import assert_outputs_stored, run_notebook

NOTEBOOK = "tuning.ipynb"


def test_notebook_is_stored_executed():
    assert_outputs_stored(NOTEBOOK, images=2)


@pytest.mark.notebook
@pytest.mark.grid
@pytest.mark.slow
def test_tuning_notebook_runs(catalogue_dir, tmp_path, monkeypatch):
    copy = tmp_path / "cat"
    shutil.copytree(catalogue_dir, copy)  # reprocess adds a model version to the catalogue
    monkeypatch.setenv("HUBCAT_CATALOGUE", str(copy))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    text = run_notebook(NOTEBOOK, tmp_path, timeout=900)
    assert "exit status 0" in text
    assert "tiles_merkle_root" in text and "model version 2" in text
    assert "neighbours in common:" in text
