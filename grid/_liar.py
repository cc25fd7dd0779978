"""A deliberately dishonest worker, for the self-test and the attack tests only.

``dask worker ... --preload grid.volunteer --preload grid._liar`` with ``HUBCAT_LIAR_MODE`` set
to one of :data:`MODES` (or a comma-separated list, used in turn) makes this worker return bad
results; ``HUBCAT_LIAR_RATE`` (default 1) is the fraction of its units it lies on, and with
``HUBCAT_LIAR_SWITCH`` set it lies only while that file exists (honest first, to earn trust).
The validator must reject every one of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random

import numpy as np

__all__ = ["MODES", "dask_setup"]

MODES = ("perturb", "nan", "shape", "dtype", "hash")


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
