"""Worker processes reuse freed tensor memory even when started by a Dask nanny."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

#: Allocate, touch and free a 1 MiB buffer 100 times; print the minor page faults it cost. (1 MiB
#: is over glibc's fixed 128 KiB mmap threshold and under the 2 MiB of a transparent huge page,
#: whose availability would otherwise change the count.)
PROBE = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    if sys.argv[1] == "kept":
        from grid._worker import keep_freed_memory
        assert keep_freed_memory()
    np.ones(2**17)  # the first block: its faults are the same either way
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        np.ones(2**17).sum()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str) -> int:
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}  # what a Dask nanny sets
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_page_faults_under_the_nanny_setting():
    """With the nanny's MALLOC_TRIM_THRESHOLD_ every 1 MiB block is a fresh mapping (256 page
    faults each); after keep_freed_memory the freed block is reused."""
    unmapped, kept = _faults("nanny"), _faults("kept")
    assert unmapped > 100 * 100, unmapped
    assert kept < 100 * 5, kept


def test_worker_setup_and_volunteer_preload_keep_freed_memory(monkeypatch):
    """Both ways a hubcat worker starts (the local cluster's plugin, the volunteer preload)
    set the thresholds before the model is loaded."""
    import ast
    from pathlib import Path

    from grid import _worker

    calls = []
    monkeypatch.setattr(_worker, "keep_freed_memory", lambda: calls.append("memory"))
    monkeypatch.setattr(_worker, "worker_model", lambda *a: calls.append("model"))
    monkeypatch.setattr(_worker, "set_torch_threads", lambda n: calls.append("threads"))
    _worker.ModelPlugin("m", None, "0" * 64, "0" * 64, 1).setup(None)
    assert calls == ["memory", "threads", "model"]
    # the preload needs a live Dask worker, and grid.volunteer refuses to be imported in a
    # process that has spoken as the operator (as this test process may have): read its source
    tree = ast.parse((Path(_worker.__file__).parent / "volunteer.py").read_text())
    setup = next(n for n in tree.body if getattr(n, "name", "") == "dask_setup")
    called = {
        c.func.id for c in ast.walk(setup) if isinstance(c, ast.Call) and hasattr(c.func, "id")
    }
    assert {"keep_freed_memory", "set_torch_threads"} <= called
