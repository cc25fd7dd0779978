"""The task a worker runs for one replica of one training unit.

A training unit is ``(round, shard, seed, steps, sha256 of the global weights)``: the worker
reads the round's global weights and its shard's tiles through the same paths an embedding
replica uses (its own store access on the operator's processes, pre-signed S3 URLs, or the
operator's replica endpoint), checks their sha256, runs :func:`embeddings.local_steps` from the
global weights, and writes the weight delta (an npz archive, :mod:`grid._deltas`) to the result
store. Only ``(sha256, nbytes, "npz")`` goes back through Dask.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np

from grid._deltas import DeltaStore, delta_bytes, read_state
from grid.errors import GridError, InvalidResultError

__all__ = ["compute_delta", "load_state", "run_training_replica", "write_delta"]


def load_state(data: bytes, sha256: str, what: str) -> dict[str, np.ndarray]:
    """Global weights from their npz bytes, after checking their sha256 (no pickles).

    Raises
    ------
    GridError
        If the bytes do not hash to ``sha256`` or are not a weights archive.
    """
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        msg = (
            f"{what}: the global weights hash to {got}, the operator announced {sha256}; "
            "they were altered in storage or in transit and were not used"
        )
        raise GridError(msg)
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        like = {k: npz[k] for k in npz.files}
    try:
        return read_state(data, like, what)
    except InvalidResultError as exc:
        raise GridError(str(exc)) from None


def compute_delta(model, state, tiles, recipe, *, seed: int, steps: int) -> dict:
    """``local_steps(...) - state``, tensor by tensor (float32)."""
    from embeddings import local_steps

    new = local_steps(model, state, tiles, recipe, seed=seed, steps=steps)
    return {k: (np.asarray(new[k], dtype=np.float32) - state[k]).astype(np.float32) for k in state}


def write_delta(store, unit_slug: str, replica: str, delta: dict) -> tuple:
    """Write a replica's delta and receipt to the result store (direct transfer)."""
    return DeltaStore.write_delta(store, unit_slug, replica, delta)


def upload_delta(transfer: dict, delta: dict) -> tuple:
    """PUT a replica's delta and receipt by its capability URLs (presigned or endpoint)."""
    from grid._presign import _request

    data, receipt = delta_bytes(delta)
    opts = {"endpoint": bool(transfer.get("endpoint")), "ca_file": transfer.get("ca_file")}
    _request(transfer["put_url"], data=data, what="the weight delta", **opts)
    _request(transfer["receipt_url"], data=json.dumps(receipt).encode(), what="its receipt", **opts)
    return receipt["sha256"], receipt["nbytes"], "npz"


def run_training_replica(spec: dict) -> tuple[str, int, str]:
    """Run ``steps`` local training steps of one unit on this worker; write the delta.

    Parameters
    ----------
    spec : dict
        ``unit_key``, ``slug``, ``replica``, ``units`` (tile-store unit keys of the shard) and
        ``tile_ids``; ``model_name``, ``weights``, ``weights_sha256``, ``digest`` (the base
        model, verified as for embedding units); ``recipe`` (:meth:`embeddings.TuneRecipe.to_dict`),
        ``seed``, ``steps``; ``state_sha256`` (of the global weights archive). Direct transfer
        adds ``tile_store``, ``results`` and ``state_key`` (in the result store); otherwise
        ``transfer`` holds the capability URLs (``tiles``, ``weights_url``, ``put_url``,
        ``receipt_url``).

    Returns
    -------
    tuple
        ``(sha256, nbytes, "npz")`` of the delta archive written; nothing else leaves the worker.

    Raises
    ------
    GridError
        If the shard's tiles or the global weights do not match what the operator planned, or
        a transfer fails.
    """

    import grid._training_task as task  # patched by grid._liar in tests
    from embeddings import TuneRecipe
    from grid._presign import _request, fetch_unit
    from grid._worker import worker_model, worker_threads_and_ca
    from hubcat.storage import open_object_store
    from tiling import TileStore

    threads, ca_file = worker_threads_and_ca()
    model = worker_model(
        spec["model_name"],
        spec["weights"],
        spec["weights_sha256"],
        spec["digest"],
        threads,
        "torch-fp32",  # training runs in torch whatever runtime embeds on this worker
    )
    recipe = TuneRecipe.from_dict(spec["recipe"])
    what = f"training unit {spec['unit_key']}"
    transfer = spec.get("transfer")
    if transfer is not None:  # capability URLs: no store, no credentials on this worker
        opts = {"endpoint": bool(transfer.get("endpoint")), "ca_file": ca_file}
        transfer = {**transfer, "ca_file": ca_file}
        raw = _request(transfer["weights_url"], what="the global weights", **opts)
        state = load_state(raw or b"", spec["state_sha256"], what)
        parts = []
        for t in transfer["tiles"]:
            t = {**t, "endpoint": opts["endpoint"], "ca_file": ca_file}
            parts.append(fetch_unit(t, int(t["n_tiles"]), t["sha256"], t["unit_key"]))
        tiles = np.concatenate(parts, axis=0)
        delta = task.compute_delta(
            model, state, tiles, recipe, seed=spec["seed"], steps=spec["steps"]
        )
        return task.upload_delta(transfer, delta)
    results = open_object_store(spec["results"])
    state = load_state(results.get(spec["state_key"]), spec["state_sha256"], what)
    store = TileStore.open(spec["tile_store"])
    ids, parts = [], []
    for key in spec["units"]:
        tile_ids, unit_tiles = store.read_unit(key)
        ids += [str(t) for t in tile_ids]
        parts.append(unit_tiles)
    if ids != list(spec["tile_ids"]):
        msg = f"{what} holds other tiles than planned; the tile store changed"
        raise GridError(msg)
    tiles = np.concatenate(parts, axis=0)
    delta = task.compute_delta(model, state, tiles, recipe, seed=spec["seed"], steps=spec["steps"])
    return task.write_delta(results, spec["slug"], spec["replica"], delta)
