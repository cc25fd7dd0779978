"""Run a notebook of ``notebooks/`` top to bottom and return what it printed."""

from __future__ import annotations

from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def read_notebook(name: str):
    """The notebook ``notebooks/<name>`` as an nbformat node."""
    import nbformat

    return nbformat.read(NOTEBOOKS / name, as_version=4)


def assert_outputs_stripped(name: str) -> None:
    """Notebooks are kept in git without outputs or execution counts."""
    for cell in read_notebook(name).cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"strip outputs of {name}"


def run_notebook(name: str, workdir: Path, timeout: int = 300) -> str:
    """Execute ``notebooks/<name>`` in ``workdir``; return its text outputs, one string.

    Fails (``nbclient.exceptions.CellExecutionError``) on the first cell that raises.
    """
    from nbclient import NotebookClient

    nb = read_notebook(name)
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    return "\n".join(
        str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
