"""A bounded load test from a second process: 240 mixed requests, 8 concurrent clients, 60 s at
most, on loopback. Every one is answered correctly, each is metered in the ledger, and the
service is still up."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.pipeline.serve.conftest import REPO

pytestmark = pytest.mark.slow


def test_bounded_load_from_a_second_process(service, cat, tile_ids, tmp_path):
    meta = cat.metadata()
    reqs = []
    for i in range(80):
        tid = tile_ids[i % len(tile_ids)]
        row = meta.iloc[i % len(meta)]
        reqs.append({"path": f"/api/similar/tile/{tid}", "params": {"k": 5}})
        reqs.append({"path": "/scs", "params": {"RA": row["ra"], "DEC": row["dec"], "SR": 0.01}})
        reqs.append({"path": f"/api/tiles/{tid}/cutout.png"})
    spec = tmp_path / "load.json"
    spec.write_text(
        json.dumps(
            {
                "url": service.url,
                "headers": service.headers("bench"),
                "concurrency": 8,
                "max_seconds": 60,
                "requests": reqs,
            }
        )
    )
    entries_before = len(service.ledger.read_bytes().splitlines())
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks._serve_load", str(spec)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert not result["timed_out"] and not result["errors"], result["errors"]
    assert result["sent"] == len(reqs)
    assert set(result["status"]) == {200}
    assert service.process.poll() is None
    # every request was metered: one signed ledger entry each
    entries_after = len(service.ledger.read_bytes().splitlines())
    assert entries_after - entries_before >= len(reqs)
