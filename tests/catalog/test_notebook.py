"""The astronomer's quickstart notebook runs top to bottom on a catalogue of real HST tiles."""

from __future__ import annotations

import pytest

from tests._notebooks import assert_outputs_stripped, run_notebook

NOTEBOOK = "quickstart.ipynb"


def test_notebook_outputs_are_stripped():
    assert_outputs_stripped(NOTEBOOK)


@pytest.mark.notebook
@pytest.mark.slow
def test_quickstart_notebook_runs(catalogue_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HUBCAT_CATALOGUE", str(catalogue_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    text = run_notebook(NOTEBOOK, tmp_path)
    assert "Merkle root:" in text
    assert "similar.vot" in text
