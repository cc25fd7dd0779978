"""The volunteers' and operators' notebook runs top to bottom."""

from __future__ import annotations

import pytest

from tests._notebooks import assert_outputs_stored, run_notebook

NOTEBOOK = "volunteers.ipynb"


def test_notebook_is_stored_executed():
    assert_outputs_stored(NOTEBOOK)


@pytest.mark.notebook
@pytest.mark.grid
@pytest.mark.slow
def test_volunteers_notebook_runs(tmp_path):
    text = run_notebook(NOTEBOOK, tmp_path)
    assert "dask worker tls://scheduler.example.org:8786" in text
    assert "'units_accepted': 2" in text
    assert "0 planned, 2 already accepted" in text
    assert "local" in text and "valid" in text  # the ledger credits the operator's machine
