"""The task a worker runs for one replica of one work unit."""

from __future__ import annotations

import numpy as np

from grid._results import ResultStore
from grid.errors import GridError

__all__ = ["compute", "run_replica", "write_result"]


def compute(model, tiles: np.ndarray) -> np.ndarray:
    """Embed a unit's tiles: float32 [N, 224, 224] -> float32 [N, D] unit vectors."""
    from embeddings import embed_tiles

    return embed_tiles(model, tiles)


def write_result(store, unit_slug: str, replica: str, vectors: np.ndarray) -> tuple:
    """Write a replica's vectors and receipt to the result store."""
    return ResultStore.write(store, unit_slug, replica, vectors)


def run_replica(spec: dict) -> tuple[str, tuple[int, ...], str]:
    """Embed one unit on this worker and write the vectors to the result store.

    Parameters
    ----------
    spec : dict
        ``tile_store`` (URI), ``unit_key``, ``tile_ids``, ``slug``, ``replica`` (id),
        ``results`` (result store URI), ``model_name``, ``weights``, ``weights_sha256``,
        ``digest``; with pre-signed URLs, ``transfer`` (see :func:`grid._presign.presign_replica`,
        plus the unit's ``sha256``) or the operator's replica endpoint
        (:meth:`grid._endpoint.ReplicaEndpoint.grant`, with ``endpoint`` set) replaces the two
        store URIs.

    Returns
    -------
    tuple
        ``(sha256, shape, dtype)`` of the vector bytes written; nothing else leaves the worker.

    Raises
    ------
    GridError
        If the unit read from the tile store does not hold the planned tiles, or a pre-signed
        download, its sha256 check or an upload fails.
    """

    from grid._presign import fetch_unit, upload_result
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
        spec.get("numerical_class"),
    )
    transfer = spec.get("transfer")
    if transfer is not None:  # capability URLs: no store, no credentials on this worker
        if transfer.get("endpoint"):
            transfer = {**transfer, "ca_file": ca_file}
        tiles = fetch_unit(transfer, len(spec["tile_ids"]), transfer["sha256"], spec["unit_key"])
        return upload_result(transfer, compute(model, tiles))
    tile_ids, tiles = TileStore.open(spec["tile_store"]).read_unit(spec["unit_key"])
    if [str(t) for t in tile_ids] != list(spec["tile_ids"]):
        msg = f"unit {spec['unit_key']} holds other tiles than planned; the tile store changed"
        raise GridError(msg)
    vectors = compute(model, tiles)
    return write_result(open_object_store(spec["results"]), spec["slug"], spec["replica"], vectors)
