"""A deliberately dishonest worker, for the self-test and the attack tests only.

``dask worker ... --preload grid.volunteer --preload grid._liar`` with ``HUBCAT_LIAR_MODE`` set
to one of :data:`MODES` (or a comma-separated list, used in turn) makes this worker return bad
results; ``HUBCAT_LIAR_RATE`` (default 1) is the fraction of its units it lies on, and with
``HUBCAT_LIAR_SWITCH`` set it lies only while that file exists (honest first, to earn trust).
The validator must reject every one of them.

Training units lie too (:data:`TRAINING_MODES`, same variables): a delta perturbed by 1 % of
its norm, scaled by 1.05 (cosine 1), zero (a free rider), with a NaN, with a tensor of the
wrong shape, or whose archive does not match its receipt. On a local cluster,
:class:`LiarPlugin` makes the named workers lie (``client.register_plugin``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["MODES", "TRAINING_MODES", "LiarPlugin", "dask_setup"]

MODES = ("perturb", "nan", "shape", "dtype", "hash")
TRAINING_MODES = ("perturb", "scale", "zero", "nan", "shape", "hash")


def _lie_delta(mode: str, delta: dict) -> dict:
    rng = np.random.default_rng()
    out = {k: v.copy() for k, v in delta.items()}
    keys = sorted(out)
    if mode == "perturb":  # plausible: 1 % of the delta's norm in random directions
        norm = float(np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in out.values())))
        size = sum(v.size for v in out.values())
        sigma = 0.01 * norm / max(1.0, np.sqrt(size))
        return {k: (v + rng.normal(0.0, sigma, v.shape)).astype(np.float32) for k, v in out.items()}
    if mode == "scale":
        return {k: (v * np.float32(1.05)).astype(np.float32) for k, v in out.items()}
    if mode == "zero":
        return {k: np.zeros_like(v) for k, v in out.items()}
    if mode == "nan":
        out[keys[0]].reshape(-1)[0] = np.nan
        return out
    if mode == "shape":
        out[keys[0]] = out[keys[0]].reshape(-1)[:-1].copy()
        return out
    return out


def patch_training(modes: list[str], rate: float = 1.0, switch: str | None = None) -> None:
    """Make this process's training units lie (see the module docstring)."""
    import grid._training_task as task
    from grid._deltas import DeltaStore, delta_bytes

    honest = task.compute_delta
    honest_write = task.write_delta
    honest_upload = task.upload_delta
    state = {"n": -1, "mode": "honest"}

    def compute_delta(model, st, tiles, recipe, *, seed, steps):
        state["n"] += 1
        lie = random.random() < rate and (not switch or os.path.exists(switch))
        state["mode"] = modes[state["n"] % len(modes)] if lie else "honest"
        delta = honest(model, st, tiles, recipe, seed=seed, steps=steps)
        return delta if state["mode"] in ("honest", "hash") else _lie_delta(state["mode"], delta)

    def forged(delta):
        _, receipt = delta_bytes(delta)
        bad, _ = delta_bytes(_lie_delta("perturb", delta))
        return bad, receipt  # the receipt of the honest delta, the bytes of another

    def write_delta(store, unit_slug, replica, delta):
        if state["mode"] != "hash":
            return honest_write(store, unit_slug, replica, delta)
        data, receipt = forged(delta)
        akey, rkey = DeltaStore.keys(unit_slug, replica)
        store.put(akey, data)
        store.put(rkey, json.dumps(receipt).encode())
        return receipt["sha256"], receipt["nbytes"], "npz"

    def upload_delta(transfer, delta):
        if state["mode"] != "hash":
            return honest_upload(transfer, delta)
        import grid._presign as presign

        data, receipt = forged(delta)
        opts = {"endpoint": bool(transfer.get("endpoint")), "ca_file": transfer.get("ca_file")}
        presign._request(transfer["put_url"], data=data, what="forged delta", **opts)
        body = json.dumps(receipt).encode()
        presign._request(transfer["receipt_url"], data=body, what="forged receipt", **opts)
        return receipt["sha256"], receipt["nbytes"], "npz"

    task.compute_delta = compute_delta
    task.write_delta = write_delta
    task.upload_delta = upload_delta


class LiarPlugin(WorkerPlugin):
    """Worker plugin that makes the workers named ``names`` lie on training units.

    Parameters
    ----------
    names : iterable of str
        Worker names (a local cluster's are ``"0"``, ``"1"``, ...).
    modes : sequence of str
        :data:`TRAINING_MODES` used in turn.
    """

    idempotent = False

    def __init__(self, names, modes=("perturb",)) -> None:
        self.name = "hubcat-liar"
        self.names = {str(n) for n in names}
        self.modes = list(modes)

    def setup(self, worker) -> None:
        if str(worker.name) in self.names:
            patch_training(self.modes)


def _lie(mode: str, vectors: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng()
    if mode == "perturb":  # plausible: unit norm, cosine ~0.99 with the truth
        out = vectors + rng.normal(0.0, 0.003, vectors.shape).astype(np.float32)
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)
    if mode == "nan":
        out = vectors.copy()
        out[0, 0] = np.nan
        return out
    if mode == "shape":
        return vectors[:, : vectors.shape[1] // 2].copy()
    return vectors


def dask_setup(worker) -> None:
    """Patch this worker process's task code to lie (see the module docstring)."""
    import grid._presign as presign
    import grid._task as task
    from grid._results import ResultStore

    modes = os.environ.get("HUBCAT_LIAR_MODE", "perturb").split(",")
    rate = float(os.environ.get("HUBCAT_LIAR_RATE", "1"))
    honest_compute = task.compute
    state = {"n": -1, "lie": True}

    switch = os.environ.get("HUBCAT_LIAR_SWITCH")

    def compute(model, tiles):
        state["n"] += 1
        state["lie"] = random.random() < rate and (not switch or os.path.exists(switch))
        vectors = honest_compute(model, tiles)
        mode = modes[state["n"] % len(modes)]
        return _lie(mode, vectors) if state["lie"] else vectors

    def forge(vectors):
        """The bytes and receipt a lying worker sends, or None to send the vectors as they are."""
        mode = modes[state["n"] % len(modes)] if state["lie"] else "honest"
        if mode == "dtype":
            data = vectors.astype(np.float16).tobytes()
            receipt = {
                "sha256": hashlib.sha256(data).hexdigest(),
                "shape": list(vectors.shape),
                "dtype": "float16",
            }
        elif mode == "hash":
            data = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
            receipt = {
                "sha256": hashlib.sha256(data).hexdigest(),
                "shape": list(vectors.shape),
                "dtype": "float32",
            }
            data = np.ascontiguousarray(_lie("perturb", vectors), dtype="<f4").tobytes()
        else:
            return None
        return data, receipt

    def write_result(store, unit_slug, replica, vectors):
        forged = forge(vectors)
        if forged is None:
            return ResultStore.write(store, unit_slug, replica, vectors)
        data, receipt = forged
        vkey, rkey = ResultStore.keys(unit_slug, replica)
        store.put(vkey, data)
        store.put(rkey, json.dumps(receipt).encode())
        return receipt["sha256"], tuple(receipt["shape"]), receipt["dtype"]

    honest_upload = presign.upload_result

    def upload_result(transfer, vectors):
        forged = forge(vectors)
        if forged is None:
            return honest_upload(transfer, vectors)
        data, receipt = forged
        opts = {"endpoint": bool(transfer.get("endpoint")), "ca_file": transfer.get("ca_file")}
        presign._request(transfer["put_url"], data=data, what="forged vectors", **opts)
        body = json.dumps(receipt).encode()
        presign._request(transfer["receipt_url"], data=body, what="forged receipt", **opts)
        return receipt["sha256"], tuple(receipt["shape"]), receipt["dtype"]

    task.compute = compute
    task.write_result = write_result
    presign.upload_result = upload_result
    training = [m for m in modes if m in TRAINING_MODES]
    if training:
        patch_training(training, rate, switch)
