"""``hubcat run --scheduler tls://... --grid-dir DIR`` on a real TLS grid on loopback."""

from __future__ import annotations

import json
import urllib.request

import pytest

from grid import GridAuthority
from grid._procs import start_scheduler, start_volunteer, stop_processes
from pipeline.cli import main

FAST_FAIL = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "5s"}


def test_tls_address_without_grid_dir_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HUBCAT_GRID_DIR", raising=False)
    out = tmp_path / "cat"
    argv = ["run", str(tmp_path / "x.fits"), "--out", str(out), "--scheduler", "tls://127.0.0.1:1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "tls://127.0.0.1:1 is a TLS grid" in err and "--grid-dir" in err
    assert "HUBCAT_GRID_DIR" in err and "TypeError" not in err
    assert not out.exists()  # nothing started
    for command in (
        ["embed", "--store", str(tmp_path / "tiles")],
        ["reprocess", str(out), "--model", "tf_efficientnet_lite0"],
    ):
        assert main([*command, "--scheduler", "tls://127.0.0.1:1"]) == 1
        assert "--grid-dir" in capsys.readouterr().err


def test_grid_dir_that_is_not_a_grid_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HUBCAT_GRID_DIR", str(tmp_path))  # the environment variable is read too
    argv = ["run", "x.fits", "--out", str(tmp_path / "cat"), "--scheduler", "tls://127.0.0.1:1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"--grid-dir {tmp_path}" in err and "not a grid directory" in err


@pytest.mark.grid
@pytest.mark.slow
def test_hubcat_run_embeds_on_a_real_tls_grid(tmp_path, capsys):
    from catalog import Catalogue
    from hubcat.synthetic import write_synthetic_mosaic

    auth = GridAuthority.init(tmp_path / "pki")
    sched, address = start_scheduler(auth, tmp_path / "logs", worker_ttl="10s")
    assert address.startswith("tls://")
    procs = [sched]
    try:
        for name in ("vol-a", "vol-b"):
            procs.append(start_volunteer(auth, address, tmp_path / "logs", name, env=FAST_FAIL))
        mosaic = write_synthetic_mosaic(tmp_path / "field.fits", (224, 224 * 4), n_sources=60)
        out = tmp_path / "cat"
        capsys.readouterr()
        argv = [
            "run",
            str(mosaic),
            "--out",
            str(out),
            "--scheduler",
            address,
            "--grid-dir",
            str(auth.directory),
            "--zooms",
            "1",
            "--unit-size",
            "2",
            "--json",
        ]
        assert main(argv) == 0, capsys.readouterr().err
        summary = json.loads(capsys.readouterr().out)
        assert summary["units"] == 2 and summary["units_computed"] == 2
        assert summary["units_failed"] == 0 and summary["merkle_root"]
        # the scheduler outlives the run: its dashboard belongs in the summary
        assert summary["dashboard"] and summary["dashboard"].startswith("http://127.0.0.1:")
        with urllib.request.urlopen(summary["dashboard"], timeout=10) as page:  # bokeh is there
            assert page.status == 200 and b"needs bokeh" not in page.read()
        cat = Catalogue.open(out)
        assert len(cat) == 4
        # every tile was computed by both enrolled volunteers (quorum 2 on a real grid)
        assert all(r["volunteers"] == ["vol-a", "vol-b"] for r in cat.records())
    finally:
        stop_processes(procs)
