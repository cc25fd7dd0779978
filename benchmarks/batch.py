"""Batch runs: a whole ``run_pipeline`` against its parts, and what a restart saves.

Figures (each against a baseline measured in the same process):

* end-to-end tiles/s of a batch run (tiling + grid embedding + catalogue, LocalCluster) against
  a bare in-process ``embed_tiles`` over the same tiles (the embedding work alone);
* time per stage as a fraction of the run;
* re-running a finished batch (everything recorded) against the first run;
* full mode only: a run killed with SIGKILL part way through the embedding stage and resumed:
  fraction of units not recomputed, and resumed time against the uninterrupted run.

Sources are real HST files from ``../shared/data/hst`` when present, else synthetic mosaics.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import Figure

STAGE = "batch"
REAL = ("mpdaf_HST-HDFS.fits", "galsim_cosmos_147246.0_150.416558_1.998697_masknoise.fits")


def _sources(tmp: Path, quick: bool) -> list[str]:
    here = Path(__file__).resolve().parents[1]
    hst = Path(os.environ.get("HUBCAT_TEST_DATA", here.parent / "shared" / "data" / "hst"))
    names = REAL[:1] if quick else REAL
    if all((hst / n).is_file() for n in names):
        return [str(hst / n) for n in names]
    sys.path.insert(0, str(here / "tests"))
    from conftest import write_synthetic_mosaic

    return [str(write_synthetic_mosaic(tmp / f"syn{i}.fits", seed=i)) for i in range(len(names))]


def _params(quick: bool) -> dict:
    return {"zooms": (1,), "unit_size": 2, "workers": 1, "progress": False}


def _bare_embed_seconds(out: Path) -> tuple[float, int]:
    """Time of embedding every tile of the run's tile store in this process (no grid)."""
    from embeddings import embed_tiles, load_model
    from tiling import TileStore

    store = TileStore.open(out / "tiles")
    tiles = [store.read_unit(u.unit_key)[1] for u in store.units()]
    model = load_model()
    t0 = time.perf_counter()
    n = 0
    for batch in tiles:
        embed_tiles(model, batch)
        n += len(batch)
    return time.perf_counter() - t0, n


def _killed_then_resumed(
    sources: list[str], out: Path, params: dict
) -> tuple[float, float, int, int]:
    """SIGKILL a CLI run after its first accepted unit, resume in-process; (kill s, resume s, reused, units)."""
    from pipeline.run import run_pipeline

    cmd = [sys.executable, "-m", "pipeline", "run", *sources, "--out", str(out), "--no-progress"]
    cmd += [
        "--zooms",
        "1",
        "--unit-size",
        str(params["unit_size"]),
        "--workers",
        str(params["workers"]),
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    units_dir = out / "tiles" / "embeddings"
    try:
        while proc.poll() is None:
            if any(units_dir.glob("*/units/*.json")):
                break
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = run_pipeline(sources, out, **params)
    return killed_s, time.perf_counter() - t0, summary.units_reused, summary.units


def run(quick: bool) -> list[Figure]:
    from pipeline.run import run_pipeline

    figures: list[Figure] = []
    tmp = Path(tempfile.mkdtemp(prefix="hubcat-bench-batch-"))
    try:
        sources = _sources(tmp, quick)
        params = _params(quick)
        out = tmp / "catalogue"
        t0 = time.perf_counter()
        summary = run_pipeline(sources, out, **params)
        total = time.perf_counter() - t0
        bare_s, n = _bare_embed_seconds(out)
        note = f"{len(sources)} sources, {summary.tiles} tiles, {summary.units} units, 1 worker"
        figures.append(
            Figure(
                STAGE,
                "batch tiles/s (tile + grid embed + catalogue)",
                summary.tiles / total,
                "tiles/s",
                "bare embed_tiles in-process",
                n / bare_s,
                note=note,
            )
        )
        for stage in ("tiling", "embedding", "catalogue"):
            sec = summary.stage_seconds.get(stage, 0.0)
            figures.append(
                Figure(
                    STAGE,
                    f"{stage} stage time",
                    sec,
                    "s",
                    "whole run",
                    total,
                    note="ratio = share of the run",
                )
            )
        t0 = time.perf_counter()
        again = run_pipeline(sources, out, **params)
        rerun = time.perf_counter() - t0
        figures.append(
            Figure(
                STAGE,
                "re-run of a finished batch",
                rerun,
                "s",
                "first run",
                total,
                note=f"{again.units_reused}/{again.units} units reused, {again.units_computed} recomputed",
            )
        )
        if not quick:
            killed_out = tmp / "killed"
            killed_s, resumed_s, reused, units = _killed_then_resumed(sources, killed_out, params)
            figures.append(
                Figure(
                    STAGE,
                    "restart saving: units not recomputed",
                    reused,
                    "units",
                    "units of the batch",
                    units,
                    note=f"SIGKILL after {killed_s:.1f} s (first accepted unit), then resumed",
                )
            )
            figures.append(
                Figure(STAGE, "resumed run time", resumed_s, "s", "uninterrupted run", total)
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return figures
