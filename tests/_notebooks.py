"""Run a notebook of ``notebooks/`` top to bottom and return what it printed."""

from __future__ import annotations

from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def read_notebook(name: str):
    """The notebook ``notebooks/<name>`` as an nbformat node."""
    import nbformat

    return nbformat.read(NOTEBOOKS / name, as_version=4)


def assert_outputs_stored(name: str, *, images: int = 0) -> None:
    """The notebook is stored as ``make notebooks`` executes it: every code cell run once, in
    order, without an error, with at least ``images`` PNG figures among the outputs."""
    nb = read_notebook(name)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{name} is not stored as executed top to bottom (execution counts {counts}); run `make notebooks`"
    )
    outputs = [out for cell in code for out in cell.outputs]
    errors = [out for out in outputs if out.get("output_type") == "error"]
    assert not errors, f"{name} was stored with an error: {errors[0].get('ename')}"
    assert not any(
        out.get("name") == "stderr" and "Traceback" in out.get("text", "") for out in outputs
    )
    pngs = sum("image/png" in out.get("data", {}) for out in outputs)
    assert pngs >= images, f"{name} stores {pngs} PNG figure(s), expected at least {images}"


def run_notebook(name: str, workdir: Path, timeout: int = 300) -> str:
    """Execute ``notebooks/<name>`` in ``workdir``; return its text outputs, one string.

    Fails (``nbclient.exceptions.CellExecutionError``) on the first cell that raises.
    """
    from nbclient import NotebookClient

    nb = read_notebook(name)
    # coalesce_streams: a busy kernel may flush one print in pieces ("ok:" and " False"), which
    # would otherwise come back as separate outputs, joined below with a newline between them
    NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
        coalesce_streams=True,
    ).execute()
    return "\n".join(
        str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
