"""A real TLS scheduler with the gate, real `dask worker` processes, and attacks on both."""

from __future__ import annotations

import datetime as dt
import decimal
import time

import numpy as np
import pytest

from grid import GridAuthority, GridConfig, RemoteTaskError, run_units
from grid._procs import start_scheduler, start_worker, stop_processes

pytestmark = [pytest.mark.grid, pytest.mark.slow]

FAST_FAIL = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "5s"}
LIARS = {"vol-liar-a": "nan,shape,dtype", "vol-liar-b": "hash,perturb"}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Authority, scheduler address, operator client, and a helper that starts workers."""
    from distributed import Client

    root = tmp_path_factory.mktemp("tls")
    auth = GridAuthority.init(root / "pki")
    sched, address = start_scheduler(auth, root / "logs", worker_ttl="10s")
    procs = []

    def worker(
        name, *, cert=None, key=None, ca=None, preloads=("grid.volunteer",), env=None, extra=()
    ):
        p = start_worker(
            address,
            name=name,
            ca=ca or auth.ca_file,
            cert=cert,
            key=key,
            log=root / "logs" / f"{name}-{len(procs)}.log",
            preloads=preloads,
            env={**FAST_FAIL, **(env or {})},
            extra_args=extra,
        )
        procs.append(p)
        return p

    client = Client(address, security=auth.security("operator"), timeout=60)
    try:
        yield {"auth": auth, "address": address, "client": client, "worker": worker, "root": root}
    finally:
        client.close()
        stop_processes([*procs, sched])


def names(client):
    return {str(w["name"]) for w in client.scheduler_info(n_workers=-1)["workers"].values()}


@pytest.fixture(scope="module")
def honest(grid):
    """Two enrolled, honest volunteers, admitted."""
    for name in ("vol-h1", "vol-h2"):
        enr = grid["auth"].enroll(name, days=1)
        grid["worker"](name, cert=enr.cert, key=enr.key)
    grid["client"].wait_for_workers(2, timeout=120)
    return ["vol-h1", "vol-h2"]


@pytest.fixture(scope="module")
def intruders(grid, honest, tmp_path_factory):
    """Workers that must be refused, started together: name -> (process, expected reason)."""
    auth = grid["auth"]
    other = GridAuthority.init(tmp_path_factory.mktemp("other") / "pki")
    foreign = other.enroll("vol-foreign", days=1)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    expired = auth._issue("vol-expired", "volunteer", days=1, not_before=past)
    real = auth.enroll("vol-real", days=1)
    extra = ("--death-timeout", "30")  # long enough to start and register on a busy machine
    return {
        "no certificate": grid["worker"]("vol-nocert", extra=extra),
        "other CA": grid["worker"]("vol-foreign", cert=foreign.cert, key=foreign.key, extra=extra),
        "expired": grid["worker"]("vol-expired", cert=expired.cert, key=expired.key, extra=extra),
        "name != CN": grid["worker"]("vol-impostor", cert=real.cert, key=real.key, extra=extra),
    }


def test_enrolled_volunteers_are_admitted(grid, honest):
    assert set(honest) <= names(grid["client"])


@pytest.mark.parametrize("attack", ["no certificate", "other CA", "expired", "name != CN"])
def test_bad_workers_are_refused(grid, intruders, attack):
    proc = intruders[attack]
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        assert not {"vol-nocert", "vol-foreign", "vol-expired", "vol-impostor"} & names(
            grid["client"]
        )
        time.sleep(0.5)
    assert proc.poll() is not None, f"worker with {attack} is still running"
    assert proc.returncode != 0
    assert not {"vol-nocert", "vol-foreign", "vol-expired", "vol-impostor"} & names(grid["client"])
    if attack == "name != CN":
        log = (grid["root"] / "logs" / "scheduler.log").read_text()
        assert "worker --name 'vol-impostor' differs from its certificate CN 'vol-real'" in log


def test_volunteer_certificate_cannot_act_as_client(grid, honest):
    from distributed import Client, Security

    enr = grid["auth"].enroll("vol-client", days=1)
    sec = Security(
        tls_ca_file=str(grid["auth"].ca_file),
        tls_client_cert=str(enr.cert),
        tls_client_key=str(enr.key),
        require_encryption=True,
    )
    with pytest.raises(Exception):  # noqa: B017 - refused by the gate, however the client reports it
        Client(grid["address"], security=sec, timeout=5).close()
    log = (grid["root"] / "logs" / "scheduler.log").read_text()
    assert "refused 'register-client' from vol-client" in log


def test_volunteer_may_not_call_operator_handlers_or_touch_other_workers(grid, honest):
    import asyncio

    from distributed import Security
    from distributed.core import rpc

    enr = grid["auth"].enroll("vol-rpc", days=1)
    sec = Security(
        tls_ca_file=str(grid["auth"].ca_file),
        tls_client_cert=str(enr.cert),
        tls_client_key=str(enr.key),
        require_encryption=True,
    )
    victim = next(iter(grid["client"].scheduler_info(n_workers=-1)["workers"]))

    async def calls():
        async with rpc(grid["address"], connection_args=sec.get_connection_args("client")) as r:
            return (
                await r.retire_workers(workers=[victim]),
                await r.get_metadata(keys=["x"], default=None),
                await r.identity(),
            )

    retire, metadata, identity = asyncio.run(calls())
    assert retire["status"] == "error" and "own workers" in retire["message"]
    assert metadata["status"] == "error" and "may not call 'get_metadata'" in metadata["message"]
    # no cluster-wide reads: a volunteer cannot list the workers and keys
    assert identity["status"] == "error" and "may not call 'identity'" in identity["message"]
    assert victim in grid["client"].scheduler_info(n_workers=-1)["workers"]


def test_nothing_from_a_worker_is_unpickled_by_the_operator(grid, honest):
    client = grid["client"]
    fut = client.submit(decimal.Decimal, "1.5", pure=False)
    bad = client.submit(int, "not a number", pure=False)
    from distributed import wait

    wait([fut, bad], timeout=60)
    assert fut.status == "finished"
    assert fut.type is None  # the scheduler dropped the pickled type before it reached us
    with pytest.raises(Exception, match="disallowed"):
        fut.result(timeout=30)  # gather is blocked: results never travel through Dask
    exc = bad.exception(timeout=30)
    assert isinstance(exc, RemoteTaskError)
    assert "invalid literal for int()" in str(exc)


def test_bad_results_are_rejected_not_credited_and_rerun(grid, honest, small_tile_store):
    """Two dishonest volunteers (NaN, shape, dtype, hash, perturbed in turn) and two honest ones."""
    from embeddings import EmbeddingStore, embed_tiles, load_model
    from grid import CreditLedger, load_ledger_key
    from hubcat.storage import open_object_store

    liars = LIARS
    for name, mode in liars.items():
        enr = grid["auth"].enroll(name, days=1)
        grid["worker"](
            name,
            cert=enr.cert,
            key=enr.key,
            preloads=("grid.volunteer", "grid._liar"),
            env={"HUBCAT_LIAR_MODE": mode},
        )
    client = grid["client"]
    client.wait_for_workers(2 + len(liars), timeout=180)
    # only two honest volunteers here: plain quorums (a dispute margin would need a third)
    config = GridConfig(
        min_quorum=2, max_replicas=7, dispute_margin=0, replica_timeout=60, idle_timeout=120
    )
    report = run_units(small_tile_store, client=client, config=config, progress=False)
    assert report.units_accepted == report.units_planned == 3
    assert report.units_failed == 0
    assert set(report.liars) <= set(liars)

    model = load_model()
    emb = EmbeddingStore(small_tile_store, model)
    for rec in emb.records():
        assert set(rec.volunteers) <= set(honest) and len(rec.volunteers) == 2
        _, got = emb.read(rec.unit_key)
        _, tiles = small_tile_store.read_unit(rec.unit_key)
        assert np.min(np.sum(got * embed_tiles(model, tiles), axis=1)) >= config.min_cosine

    ledger = CreditLedger(
        open_object_store(small_tile_store.uri).child("grid/ledger"),
        public_key=load_ledger_key().public_key(),
    )
    ledger.verify()
    expected = {
        "nan": "nan",
        "shape": "shape",
        "dtype": "dtype",
        "hash": "hash",
        "perturb": "mismatch",
    }
    reasons = set()
    for e in ledger.entries():
        if e["volunteer"] in liars:
            assert e["event"] == "invalid" and e["credit"] == 0
            assert e["reason"] in {expected[m] for m in liars[e["volunteer"]].split(",")}
            reasons.add(e["reason"])
        else:
            assert e["event"] == "valid" and e["credit"] > 0
    flagged = {e["volunteer"] for e in ledger.entries() if e["event"] == "invalid"}
    assert flagged == set(report.liars)
    # every liar that ran a replica was caught
    from grid import UnitRecords

    recs = UnitRecords(open_object_store(small_tile_store.uri).child(f"grid/{model.digest}")).all()
    ran = {
        r["worker"]
        for rec in recs
        for r in rec["replicas"].values()
        if r["status"] in ("valid", "invalid")
    }
    assert ran & set(liars) == flagged
    assert flagged, "no liar got a unit: the test proved nothing"
