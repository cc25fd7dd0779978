"""The astronomer's quickstart notebook runs top to bottom on a catalogue of real HST tiles."""

from __future__ import annotations

import pytest

from tests._notebooks import assert_outputs_stored, run_notebook

NOTEBOOK = "quickstart.ipynb"


def test_notebook_is_stored_executed():
    assert_outputs_stored(NOTEBOOK, images=3)


@pytest.mark.notebook
@pytest.mark.slow
def test_quickstart_notebook_runs(catalogue_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HUBCAT_CATALOGUE", str(catalogue_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    text = run_notebook(NOTEBOOK, tmp_path)
    assert "Merkle root:" in text
    assert "similar.vot" in text


def test_notebooks_find_the_demo_catalogue_from_notebooks_folder(tmp_path, monkeypatch):
    """From the repository root or notebooks/, the default is the repository's demo-catalogue."""
    from catalog.errors import CatalogNotFoundError
    from pipeline.samples import find_catalogue

    monkeypatch.delenv("HUBCAT_CATALOGUE", raising=False)
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    with pytest.raises(CatalogNotFoundError, match="make demo"):
        find_catalogue(repo / "notebooks")
    (repo / "demo-catalogue").mkdir()
    (repo / "demo-catalogue" / "manifest.json").write_text("{}")
    assert find_catalogue(repo / "notebooks") == str(repo / "demo-catalogue")
    assert find_catalogue(repo) == str(repo / "demo-catalogue")
    monkeypatch.chdir(repo / "notebooks")
    assert find_catalogue() == str(repo / "demo-catalogue")
    monkeypatch.setenv("HUBCAT_CATALOGUE", "s3://bucket/cat")
    assert find_catalogue(repo / "notebooks") == "s3://bucket/cat"


def test_notebooks_say_which_catalogue_in_their_first_cell():
    from tests._notebooks import read_notebook

    for name in ("quickstart.ipynb", "provenance.ipynb"):
        nb = read_notebook(name)
        assert "demo-catalogue" in nb.cells[0].source and "HUBCAT_CATALOGUE" in nb.cells[0].source
        assert "find_catalogue()" in nb.cells[1].source
