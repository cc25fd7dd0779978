"""`hubcat grid ...` commands, including the TLS self-test."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.cli import main


def test_init_enroll_revoke_print_command(tmp_path, capsys):
    d = tmp_path / "g"
    assert main(["grid", "init", str(d)]) == 0
    assert (
        main(
            [
                "grid",
                "enroll",
                "vol-carol",
                "--dir",
                str(d),
                "--days",
                "3",
                "--scheduler",
                "tls://h:8786",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "dask worker tls://h:8786" in out and "--name vol-carol" in out
    assert main(["grid", "scheduler", "--dir", str(d), "--print-command"]) == 0
    out = capsys.readouterr().out
    assert "--preload grid.gate" in out and "REQUIRE_ENCRYPTION='True'" in out
    assert "BLOCKED_HANDLERS" in out
    assert main(["grid", "revoke", "vol-carol", "--dir", str(d)]) == 0
    assert main(["grid", "enroll", "Bad Name", "--dir", str(d)]) == 1
    assert "volunteer name 'Bad Name' is invalid" in capsys.readouterr().err


def test_grid_dir_spelling_and_environment(tmp_path, capsys, monkeypatch):
    """--grid-dir as in run/embed/reprocess; HUBCAT_GRID_DIR is its default."""
    d = tmp_path / "g"
    assert main(["grid", "init", str(d)]) == 0
    assert f"--grid-dir {d}" in capsys.readouterr().out
    assert main(["grid", "enroll", "vol-dan", "--grid-dir", str(d)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("HUBCAT_GRID_DIR", str(d))
    assert main(["grid", "revoke", "vol-dan"]) == 0
    from grid import GridAuthority

    assert GridAuthority.open(d).register()["volunteers"]["vol-dan"].get("revoked")


def test_selftest_rejects_impossible_quorum(capsys):
    assert main(["grid", "selftest", "--workers", "3", "--liars", "1", "--kill", "1"]) == 1
    assert "a quorum of 2 needs at least 2" in capsys.readouterr().err


@pytest.mark.grid
@pytest.mark.slow
def test_selftest_with_a_liar_a_spoofer_an_overwriter_and_a_killed_worker(tmp_path):
    """One attacker of each kind (and a vanishing worker): no wrong vector accepted, no payload
    ran anywhere, no forged ledger entry counted, no honest volunteer blamed."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "grid",
            "selftest",
            "--workers",
            "6",
            "--liars",
            "1",
            "--spoofers",
            "1",
            "--overwriters",
            "1",
            "--kill",
            "1",
            "--units",
            "4",
            "--unit-size",
            "1",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.index("{") :])
    for key in (
        "units",
        "replicas_run",
        "replicas_per_accepted_unit",
        "liars_detected",
        "units_lost",
        "equal_to_honest",
    ):
        assert key in result
    assert result["units"] == 4 and result["units_lost"] == 0
    assert result["liars"] == ["vol-1"] and result["spoofers"] == ["vol-2"]
    assert set(result["liars_detected"]) <= {"vol-1", "vol-2"}
    assert "vol-1" in result["liars_detected"] or result["replicas_invalid"] == 0
    assert result["honest_blamed"] == []
    assert result["equal_to_honest"] is True
    assert result["wrong_vectors_accepted"] == 0
    assert result["code_executed"] == 0
    assert result["forged_ledger_entries_accepted"] == 0
    assert result["forged_ledger_entries_named"] == 12
    assert len(result["killed"]) == 1
