"""The volunteers' and operators' notebook runs top to bottom."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "volunteers.ipynb"


def test_notebook_outputs_are_stripped():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.notebook
@pytest.mark.grid
@pytest.mark.slow
def test_volunteers_notebook_runs(tmp_path):
    import nbclient
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "\n".join(
        str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    assert "dask worker tls://scheduler.example.org:8786" in text
    assert "'units_accepted': 2" in text
    assert "0 planned, 2 already accepted" in text
    assert "local" in text and "valid" in text  # the ledger credits the operator's machine
