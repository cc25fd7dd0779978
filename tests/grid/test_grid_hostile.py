"""Hostile volunteers on a real TLS grid on loopback, attacking at the protocol level.

Every attack below was observed against the first release; each test reproduces it the way an
enrolled (or revoked) volunteer would, with raw ``distributed.comm`` connections made by Dask's
*stock* TLS classes, forged stream messages from a real ``dask worker`` of the attacker's own
(``--preload grid._attacks``), or by writing into storage it can reach, and asserts the defence.
Payloads that would run code write a marker file named after the process they run in.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from grid import GridAuthority, GridConfig, run_units
from grid._attacks import Payload, raw_connect
from grid._procs import start_scheduler, start_worker, stop_processes

pytestmark = [pytest.mark.grid, pytest.mark.slow]

FAST_FAIL = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "5s"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A gated scheduler, two honest volunteers, one attacker worker, the operator's client."""
    from distributed import Client

    root = tmp_path_factory.mktemp("hostile")
    markers = root / "markers"
    markers.mkdir()
    auth = GridAuthority.init(root / "pki")
    sched, address = start_scheduler(auth, root / "logs", worker_ttl="10s")
    procs = {}

    def worker(name, *, preloads=("grid.volunteer",), env=None, enroll=True, **kw):
        enr = auth.enroll(name, days=1) if enroll else None
        procs[name] = start_worker(
            address,
            name=name,
            ca=auth.ca_file,
            cert=kw.get("cert", enr.cert if enr else None),
            key=kw.get("key", enr.key if enr else None),
            log=root / "logs" / f"{name}.log",
            preloads=preloads,
            env={**FAST_FAIL, **(env or {})},
            extra_args=kw.get("extra", ()),
        )
        return procs[name]

    client = Client(address, security=auth.security("operator"), timeout=60)
    for name in ("vol-h1", "vol-h2"):
        worker(name)
    client.wait_for_workers(2, timeout=180)
    victims = list(client.scheduler_info(n_workers=-1)["workers"])
    worker(
        "vol-attacker",
        preloads=("grid.volunteer", "grid._attacks"),
        env={
            "HUBCAT_ATTACK": "pickles",
            "HUBCAT_ATTACK_MARKERS": str(markers),
            "HUBCAT_ATTACK_VICTIMS": ",".join(victims),
        },
    )
    client.wait_for_workers(3, timeout=180)
    log = root / "logs" / "vol-attacker.log"
    deadline = time.monotonic() + 60
    while "pickle attacks sent" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    try:
        yield {
            "auth": auth,
            "address": address,
            "client": client,
            "root": root,
            "markers": markers,
            "victims": victims,
            "worker": worker,
            "procs": procs,
            "scheduler": sched,
        }
    finally:
        client.close()
        stop_processes([*procs.values(), sched])


def _sec_args(auth, enr):
    from distributed import Security

    sec = Security(
        tls_ca_file=str(auth.ca_file),
        tls_client_cert=str(enr.cert),
        tls_client_key=str(enr.key),
        require_encryption=True,
    )
    return sec.get_connection_args("client")


def _names(client):
    return {str(w["name"]) for w in client.scheduler_info(n_workers=-1)["workers"].values()}


def test_the_payload_really_runs_code_when_unpickled(tmp_path):
    """Control: the marker payload does run when something unpickles it."""
    data = pickle.dumps(Payload(str(tmp_path), "control"))
    code = f"import pickle; pickle.loads({data!r})"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert [p.name.split("-", 1)[1] for p in tmp_path.iterdir()] == ["control"]


async def _send_all(address, args, messages, *, read=True):
    """Send each message on a fresh raw connection; return what came back (or the error)."""
    out = []
    for msg in messages:
        try:
            comm = await raw_connect(address, args)
        except Exception as exc:
            out.append(f"connect: {type(exc).__name__}")
            continue
        try:
            await comm.write(msg)
            out.append(await asyncio.wait_for(comm.read(), 10) if read else "sent")
        except Exception as exc:
            out.append(f"{type(exc).__name__}")
        finally:
            comm.abort()
    return out


def test_pickled_parts_from_volunteers_never_run_on_the_scheduler(hostile):
    """Attack 1: a volunteer's certificate (a revoked one too) sends ToPickle/Serialize parts in
    every place a field can hold them; nothing runs on the scheduler."""
    from distributed.protocol import Serialize, ToPickle

    auth, markers = hostile["auth"], str(hostile["markers"])
    vol = auth.enroll("vol-raw", days=1)
    revoked = auth.enroll("vol-revoked", days=1)
    auth.revoke("vol-revoked")
    victim = hostile["victims"][0]

    def p(tag):
        return ToPickle(Payload(markers, tag))

    messages = [
        {"op": "heartbeat_worker", "address": victim, "metrics": p("heartbeat"), "reply": True},
        {"op": "no-such-op", "x": p("unknown-op")},
        {"op": "identity", "x": Serialize(Payload(markers, "serialized"))},
        {
            "op": "register-worker",
            "name": "vol-raw",
            "address": "tls://127.0.0.1:1",
            "extra": p("reg"),
        },
        {"op": "update-graph", "graph": p("graph"), "keys": ["x"]},
        [{"op": "task-finished", "key": "x", "worker": victim, "metadata": p("stream")}],
    ]
    for enr in (vol, revoked):
        replies = asyncio.run(_send_all(hostile["address"], _sec_args(auth, enr), messages))
        for reply in replies:
            assert not isinstance(reply, dict) or reply.get("status") == "error", reply
    time.sleep(1.0)
    assert list(hostile["markers"].iterdir()) == []
    # the scheduler is still there and still serves its operator
    assert {"vol-h1", "vol-h2"} <= _names(hostile["client"])


def test_an_oversized_message_is_refused_before_it_is_read(hostile):
    """A volunteer's message larger than the cap closes its connection before being read."""
    auth = hostile["auth"]
    vol = auth.enroll("vol-big", days=1)
    big = {"op": "heartbeat_worker", "metrics": b"\0" * (16 * 2**20)}
    (reply,) = asyncio.run(_send_all(hostile["address"], _sec_args(auth, vol), [big]))
    assert reply in ("CommClosedError", "StreamClosedError", "TimeoutError"), reply
    log = (hostile["root"] / "logs" / "scheduler.log").read_text()
    assert "exceeds" in log or "cap" in log
    assert {"vol-h1", "vol-h2"} <= _names(hostile["client"])


def test_volunteer_workers_accept_the_scheduler_only(hostile):
    """Attack 2: a payload sent straight to another volunteer's worker never runs there; the
    worker drops every connection that is not the scheduler's before reading a frame."""
    from distributed.protocol import ToPickle

    auth, markers = hostile["auth"], str(hostile["markers"])
    vol = auth.enroll("vol-peer", days=1)
    msg = {"op": "run", "function": ToPickle(Payload(markers, "peer"))}
    for victim in hostile["victims"]:
        for args in (
            _sec_args(auth, vol),
            hostile["auth"].security("operator").get_connection_args("client"),
        ):
            (reply,) = asyncio.run(_send_all(victim, args, [msg]))
            assert not isinstance(reply, dict), reply
    time.sleep(1.0)
    assert list(hostile["markers"].iterdir()) == []
    for name in ("vol-h1", "vol-h2"):
        log = (hostile["root"] / "logs" / f"{name}.log").read_text()
        assert "accepts the scheduler only" in log


def test_nothing_a_worker_streams_reaches_the_operator(hostile):
    """Attack 3: ``log_event(topic="print", msg=Serialize(...))`` and forged ``hubcat-gate``
    events from a real worker's stream: the operator's client (subscribed to ``print``) never
    receives them, and no payload ran in any process."""
    client = hostile["client"]
    log = (hostile["root"] / "logs" / "vol-attacker.log").read_text()
    assert "pickle attacks sent" in log
    time.sleep(1.0)
    assert list(hostile["markers"].iterdir()) == []
    assert client.get_events("print") == ()
    assert client.get_events("hubcat-gate") == ()
    sched_log = (hostile["root"] / "logs" / "scheduler.log").read_text()
    assert "dropped stream op 'log-event' from vol-attacker" in sched_log
    assert "dropped stream op 'add-keys' from vol-attacker" in sched_log


def test_a_volunteer_speaks_only_for_itself(hostile):
    """Attack 8: heartbeats and retirements naming another worker are refused; who_has and
    identity (cluster-wide reads) are refused."""
    client = hostile["client"]
    info = client.scheduler_info(n_workers=-1)["workers"]
    for victim in hostile["victims"]:
        assert victim in info
        assert "hw-forged" not in info[victim]["resources"]
    log = (hostile["root"] / "logs" / "scheduler.log").read_text()
    assert "a heartbeat may only name the volunteer's own worker" in log
    assert "'retire_workers' may only name the volunteer's own workers" in log
    for op in ("who_has", "identity", "get_metadata"):
        assert f"volunteer certificates may not call {op!r}" in log


def test_the_client_refuses_a_scheduler_with_a_volunteer_certificate(hostile, tmp_path):
    """Attack 8: a volunteer's certificate posing as the scheduler; the operator's client
    checks the role, not only the CA."""
    from distributed import Client

    auth = hostile["auth"]
    fake = auth.enroll("vol-fake-scheduler", days=1)
    argv = [
        sys.executable, "-m", "dask", "scheduler", "--protocol", "tls", "--host", "127.0.0.1",
        "--port", "0", "--tls-ca-file", str(auth.ca_file), "--tls-cert", str(fake.cert),
        "--tls-key", str(fake.key), "--scheduler-file", str(tmp_path / "s.json"),
        "--dashboard-address", "127.0.0.1:0",
    ]  # fmt: skip
    env = {**os.environ, "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "s.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        import json

        address = json.loads((tmp_path / "s.json").read_text())["address"]
        with pytest.raises(Exception, match="not the grid scheduler's certificate"):
            Client(address, security=auth.security("operator"), timeout=10)
    finally:
        stop_processes([proc])


def test_the_scheduler_holds_no_operator_secret(hostile, tmp_path):
    """The scheduler process is given its own folder only: no CA, operator or ledger key in it
    or in its environment; given the full grid directory, it refuses to start."""
    pid = hostile["scheduler"].pid
    env = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
        if "=" in item
    )
    folder = Path(env["HUBCAT_GRID_DIR"])
    assert folder == hostile["auth"].scheduler_folder
    assert not {"ca.key", "operator.key", "ledger.key"} & {p.name for p in folder.iterdir()}
    assert not [k for k in env if k.startswith(("HUBCAT_SIGNING", "HUBCAT_LEDGER", "AWS_"))]
    for value in env.values():
        assert "ca.key" not in value and "operator.key" not in value

    from grid._procs import scheduler_argv, scheduler_environment

    argv, extra = scheduler_argv(hostile["auth"], port=0, dashboard="127.0.0.1:0")
    extra["HUBCAT_GRID_DIR"] = str(hostile["auth"].directory)  # the whole grid directory
    out = subprocess.run(argv, env=scheduler_environment(extra), capture_output=True, timeout=120)
    assert out.returncode != 0
    assert b"those keys must stay with the operator" in out.stdout + out.stderr


def test_revoke_disconnects_the_volunteer_at_once(hostile):
    client, auth = hostile["client"], hostile["auth"]
    proc = hostile["worker"]("vol-soon-revoked")
    client.wait_for_workers(4, timeout=180)
    assert "vol-soon-revoked" in _names(client)
    t0 = time.monotonic()
    auth.revoke("vol-soon-revoked")
    while "vol-soon-revoked" in _names(client) and time.monotonic() - t0 < 30:
        time.sleep(0.2)
    gone = time.monotonic() - t0
    assert "vol-soon-revoked" not in _names(client)
    assert gone < 10, f"still connected {gone:.1f} s after revoke"
    revoked = client.sync(client.scheduler.hubcat_revoked)
    assert "revoked" in revoked["vol-soon-revoked"]
    proc.wait(60)  # the worker is closed by the scheduler and does not come back
    log = (hostile["root"] / "logs" / "vol-soon-revoked.log").read_text()
    assert "hubcat gate: 'vol-soon-revoked' has been revoked" in log


def test_a_refused_worker_says_why_and_exits_nonzero(hostile):
    auth = hostile["auth"]
    real = auth.enroll("vol-real-name", days=1)
    proc = hostile["worker"](
        "vol-impostor", enroll=False, cert=real.cert, key=real.key, extra=("--death-timeout", "40")
    )
    assert proc.wait(90) != 0
    log = (hostile["root"] / "logs" / "vol-impostor.log").read_text()
    assert "hubcat gate refused 'register-worker'" in log
    assert "worker --name 'vol-impostor' differs from its certificate CN 'vol-real-name'" in log
    assert "KeyError" not in log


def test_a_liar_caught_later_loses_every_earlier_win(hostile, tmp_path):
    """Attack 7: a liar made trusted wins units alone in run 1 (honestly), lies in run 2 and is
    caught by a canary; every unit it won alone, in either run, is reopened, recomputed by a
    quorum of others, and its credit revoked by signed entries."""
    from embeddings import EmbeddingStore, embed_tiles, load_model
    from grid import CreditLedger, load_ledger_key
    from grid._selftest import synthetic_tile_store
    from hubcat.storage import open_object_store
    from hubcat.synthetic import write_synthetic_mosaic

    client, auth = hostile["client"], hostile["auth"]
    switch = tmp_path / "lie-now"
    hostile["worker"](
        "vol-sleeper",
        preloads=("grid.volunteer", "grid._liar"),
        env={"HUBCAT_LIAR_MODE": "perturb", "HUBCAT_LIAR_SWITCH": str(switch)},
    )
    store = synthetic_tile_store(tmp_path / "data", units=4, unit_size=1, seed=11)
    key = load_ledger_key(auth.ledger_key_file)
    ledger = CreditLedger(open_object_store(store.uri).child("grid/ledger"), signing_key=key)
    for i in range(5):  # a record of valid results earned earlier (signed by the operator)
        ledger.append("vol-sleeper", "valid", unit=f"earlier-{i}", tiles=1, credit=1.0)
    names = _names(client)
    n = len(names | {"vol-sleeper"})
    client.wait_for_workers(n, timeout=180)
    run1 = GridConfig(
        min_quorum=2, trust_after=5, spot_check_rate=0.5, canary_rate=0.0, max_in_flight=1,
        replica_timeout=60, idle_timeout=120,
    )  # fmt: skip
    first = run_units(store, client=client, config=run1, progress=False, grid_dir=auth.directory)
    assert first.units_accepted == 4
    from grid import UnitRecords

    model = load_model()
    records = UnitRecords(open_object_store(store.uri).child(f"grid/{model.digest}"))
    singles = {r["unit_key"] for r in records.all() if r["accepted"]["single"]}
    assert singles and all(
        r["accepted"]["volunteers"] == ["vol-sleeper"]
        for r in records.all()
        if r["accepted"]["single"]
    )

    switch.write_text("now")
    store.add_mosaic(
        write_synthetic_mosaic(tmp_path / "second.fits", (224, 224), seed=12, n_sources=60)
    )
    run2 = GridConfig(
        min_quorum=2, trust_after=5, spot_check_rate=0.0, canary_rate=1.0, max_in_flight=1,
        replica_timeout=60, idle_timeout=120,
    )  # fmt: skip
    second = run_units(store, client=client, config=run2, progress=False, grid_dir=auth.directory)
    assert "vol-sleeper" in second.liars
    assert second.units_reopened >= len(singles)
    emb = EmbeddingStore(store, model)
    for rec in emb.records():
        assert len(rec.volunteers) == 2  # nothing stands on the liar's word alone any more
        if rec.unit_key in singles:
            assert "vol-sleeper" not in rec.volunteers
        _, got = emb.read(rec.unit_key)
        _, tiles = store.read_unit(rec.unit_key)
        assert np.min(np.sum(got * embed_tiles(model, tiles), axis=1)) >= run2.min_cosine
    reader = CreditLedger(ledger.store, public_key=key.public_key())
    reader.verify()
    revoked = {e["unit"] for e in reader.entries() if e["event"] == "revoked"}
    assert singles <= revoked
