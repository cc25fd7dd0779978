"""The foundation path, end to end through the real command line: FITS -> catalogue -> query.

One real drizzled HST mosaic goes through ``hubcat run`` (tiling, a LocalCluster with real worker
processes, the catalogue and its signed Merkle root); ``hubcat demo`` runs on the sample data a
registry package ships. Both check what a user sees, not internals.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DRIZZLED = "drizzle_reference_square_image_acs-hrc_f606w_ngc104.fits"


def hubcat(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="error::RuntimeWarning")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"hubcat {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="module")
def drizzled_run(hst_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "cat"
    proc = hubcat("run", str(hst_dir / DRIZZLED), "--out", str(out), "--workers", "2", "--json")
    return out, json.loads(proc.stdout)


@pytest.mark.slow
@pytest.mark.grid
def test_run_summary_names_what_was_done(drizzled_run):
    _out, summary = drizzled_run
    assert summary["ok"] is True
    assert len(bytes.fromhex(summary["merkle_root"])) == 32
    assert summary["tiles"] > 0 and summary["units"] > 0


@pytest.mark.slow
@pytest.mark.grid
def test_tile_centres_agree_with_the_source_wcs(drizzled_run, hst_dir):
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.wcs import WCS

    from catalog import Catalogue

    out, _ = drizzled_run
    meta = Catalogue.open(out).metadata()
    with fits.open(hst_dir / DRIZZLED) as hdul:
        wcs = WCS(hdul["SCI"].header)
    side = 224 * meta["zoom"].to_numpy()
    x = meta["x0"].to_numpy() + (side - 1) / 2
    y = meta["y0"].to_numpy() + (side - 1) / 2
    expected = wcs.pixel_to_world(x, y).icrs
    got = SkyCoord(meta["ra"].to_numpy(), meta["dec"].to_numpy(), unit="deg", frame="icrs")
    assert np.max(got.separation(expected).to_value("mas")) < 1.0
    assert set(meta["zoom"]) >= {1, 2}


@pytest.mark.slow
@pytest.mark.grid
def test_similar_returns_k_rows_the_query_first(drizzled_run):
    from catalog import Catalogue

    out, _ = drizzled_run
    cat = Catalogue.open(out)
    tile_id = cat.metadata()["tile_id"].iloc[3]
    result = cat.similar(tile_id, k=5)
    assert len(result) == 5
    assert result["tile_id"][0] == tile_id
    assert result["similarity"][0] == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.diff(np.asarray(result["similarity"])) <= 1e-6)


@pytest.mark.slow
@pytest.mark.grid
def test_verify_accepts_the_catalogue(drizzled_run):
    out, summary = drizzled_run
    proc = hubcat("verify", str(out))
    assert summary["merkle_root"] in proc.stdout


@pytest.mark.slow
@pytest.mark.grid
def test_demo_runs_on_packaged_hubble_data_and_resumes(tmp_path):
    from pipeline.samples import sample_paths
    from tiling.errors import SourceNotFoundError

    try:
        sample_paths()
    except SourceNotFoundError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "demo"
    first = hubcat("demo", "--out", str(out), "--workers", "1", "--no-progress")
    text = first.stdout + first.stderr
    for expected in (
        "a478hst-cutout.fits",
        "HST-HDFS.fits",
        "Merkle root",
        "weights sha256",
        "time per stage",
        "Neighbours of tile",
    ):
        assert expected in text, f"demo output lacks {expected!r}"
    lowered = text.lower()
    for forbidden in ("random", "missing weights", "traceback"):
        assert forbidden not in lowered, f"demo output mentions {forbidden!r}:\n{text}"
    root = re.search(r"Merkle root\W+([0-9a-f]{64})", text).group(1)

    again = hubcat("demo", "--out", str(out), "--workers", "1", "--no-progress")
    assert "0 computed by this run" in again.stdout, again.stdout
    assert re.search(r"Merkle root\W+([0-9a-f]{64})", again.stdout).group(1) == root
