"""Pre-signed S3 URLs: volunteers read tiles and write results without storage credentials.

When :attr:`grid.GridConfig.presigned_urls` is set and the tile store lives under ``s3://``,
the operator's process signs, for each replica, one GET URL for the unit's Zarr chunk and two
PUT URLs for the replica's result objects (vectors and receipt), all expiring after
``replica_timeout + url_margin`` seconds. The worker fetches and uploads them with plain HTTP
(:mod:`urllib.request`): it needs neither boto3 nor credentials, and can touch no other object.

The worker decodes the raw chunk exactly as Zarr does for the tile store's arrays (the ``bytes``
codec, no compressor: see :class:`tiling.TileStore`) and checks the unit's sha256 from
:meth:`tiling.TileStore.units` before use, so a chunk altered in the bucket or in transit is
never embedded. The validator reads the results back through the operator's own
:class:`~hubcat.storage.S3ObjectStore`, exactly as for a local result store.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request

import numpy as np

from grid._results import DTYPE, ResultStore
from grid.errors import GridConfigError, GridError
from tiling import TilingError

__all__ = ["ChunkLayout", "chunk_layout", "fetch_unit", "presign_replica", "upload_result"]

#: Attempts per HTTP request (connection errors and 5xx answers are retried with backoff).
ATTEMPTS = 4

#: Largest expiry S3 accepts for a pre-signed URL (s).
MAX_EXPIRES = 7 * 24 * 3600

ChunkLayout = dict
"""Where and how one unit's tiles sit in a Zarr chunk (:meth:`tiling.UnitChunk.to_dict`):
``key``, ``chunk_shape``, ``dtype``, ``offset``, ``fill_value``."""


def chunk_layout(tile_store, unit) -> ChunkLayout:
    """The Zarr chunk that holds ``unit``'s tiles, as the tile store reports it (operator side).

    Parameters
    ----------
    tile_store : tiling.TileStore
    unit : tiling.UnitRef

    Returns
    -------
    ChunkLayout

    Raises
    ------
    GridConfigError
        If the tile store's encoding is one a worker cannot decode from raw bytes (a compressor,
        sharding or another dtype): such a tile store cannot be served by pre-signed URLs.
    """
    try:
        return tile_store.unit_chunk(unit).to_dict()
    except TilingError as exc:
        msg = f"{exc}; or run without presigned_urls"
        raise GridConfigError(msg) from None


def presign_replica(
    tile_objects, results: ResultStore, layout: ChunkLayout, unit_slug: str, replica: str, expires
) -> dict:
    """Pre-signed URLs of one replica (operator side).

    Parameters
    ----------
    tile_objects : hubcat.storage.S3ObjectStore
        The tile store's object store (signs the chunk GET).
    results : ResultStore
        The run's result store (on S3; signs the two PUTs).
    layout : ChunkLayout
        From :func:`chunk_layout`.
    unit_slug, replica : str
        Names of the result objects.
    expires : float
        Lifetime of every URL (s), at most 7 days.

    Returns
    -------
    dict
        ``layout`` plus ``get_url``, ``put_url`` (vectors) and ``receipt_url``.

    Raises
    ------
    tiling.errors.StoragePermissionError
        If the stores have no credentials to sign with.
    """
    seconds = max(1, min(int(expires), MAX_EXPIRES))
    vkey, rkey = ResultStore.keys(unit_slug, replica)
    return {
        **layout,
        "get_url": tile_objects.presigned_get_url(layout["key"], seconds),
        "put_url": results.store.presigned_put_url(vkey, seconds),
        "receipt_url": results.store.presigned_put_url(rkey, seconds),
    }


def _request(
    url: str,
    *,
    data: bytes | None = None,
    what: str,
    endpoint: bool = False,
    ca_file: str | None = None,
) -> bytes | None:
    """GET (``data`` None) or PUT ``url``; None for a 404 GET. Retries 5xx and dropped links.

    With ``endpoint`` the URL is a capability of the operator's
    :class:`grid._endpoint.ReplicaEndpoint`; over HTTPS it is fetched only from a peer that
    presents the grid's operator certificate (``ca_file``: the grid's CA).
    """
    method = "GET" if data is None else "PUT"
    if endpoint:
        return _endpoint_request(url, data=data, what=what, ca_file=ca_file)
    headers = {} if data is None else {"Content-Type": "application/octet-stream"}
    public = url.split("?", 1)[0]  # never log the signature
    for attempt in range(1, ATTEMPTS + 1):
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and data is None:
                return None
            if exc.code < 500 or attempt == ATTEMPTS:
                hint = " (the URL expired or was altered?)" if exc.code == 403 else ""
                msg = f"cannot {method} {what} at {public}: HTTP {exc.code} {exc.reason}{hint}"
                raise GridError(msg) from None
        except (urllib.error.URLError, OSError) as exc:
            if attempt == ATTEMPTS:
                msg = f"cannot {method} {what} at {public}: {exc}"
                raise GridError(msg) from None
        time.sleep(min(0.2 * 2**attempt, 3.0))
    raise AssertionError("unreachable")  # pragma: no cover


def _endpoint_request(url: str, *, data: bytes | None, what: str, ca_file: str | None):
    from grid._endpoint import http_request

    method = "GET" if data is None else "PUT"
    for attempt in range(1, ATTEMPTS + 1):
        try:
            status, body = http_request(url, data=data, ca_file=ca_file)
        except GridError:
            if attempt == ATTEMPTS:
                raise
            time.sleep(min(0.2 * 2**attempt, 3.0))
            continue
        if status == 200:
            return body
        if status < 500 or attempt == ATTEMPTS:
            text = body[:200].decode(errors="replace")
            msg = f"cannot {method} {what} at the operator's endpoint: HTTP {status} {text}"
            raise GridError(msg)
        time.sleep(min(0.2 * 2**attempt, 3.0))
    raise AssertionError("unreachable")  # pragma: no cover


def fetch_unit(transfer: dict, n_tiles: int, sha256: str, unit_key: str) -> np.ndarray:
    """Download a unit's chunk by its pre-signed URL, decode it, check its sha256 (worker side).

    Parameters
    ----------
    transfer : dict
        From :func:`presign_replica`.
    n_tiles : int
        Tiles of the unit.
    sha256 : str
        The unit's recorded hash (of its tiles as float32 little-endian C-order bytes).
    unit_key : str
        Names the unit in messages.

    Returns
    -------
    numpy.ndarray of float32, shape (n_tiles, 224, 224)

    Raises
    ------
    GridError
        If the download fails, the chunk has the wrong size, or its tiles do not hash to
        ``sha256`` (the unit is then not embedded).
    """
    shape = tuple(transfer["chunk_shape"])
    data = _request(
        transfer["get_url"],
        what=f"the tiles of unit {unit_key}",
        endpoint=bool(transfer.get("endpoint")),
        ca_file=transfer.get("ca_file"),
    )
    if data is None:  # Zarr does not write a chunk made only of the fill value
        chunk = np.full(shape, transfer["fill_value"], dtype="<f4")
    else:
        if len(data) != int(np.prod(shape)) * 4:
            msg = f"unit {unit_key}: chunk of {len(data)} bytes, expected float32 {list(shape)}"
            raise GridError(msg)
        chunk = np.frombuffer(data, dtype=transfer["dtype"]).reshape(shape)
    start = int(transfer["offset"])
    tiles = np.ascontiguousarray(chunk[start : start + n_tiles], dtype="<f4")
    digest = hashlib.sha256(tiles.tobytes()).hexdigest()
    if digest != sha256:
        msg = (
            f"unit {unit_key}: the downloaded tiles hash to {digest}, but {sha256} was recorded; "
            "the chunk was altered in the bucket or in transit; it was not embedded"
        )
        raise GridError(msg)
    return tiles


def upload_result(transfer: dict, vectors: np.ndarray) -> tuple[str, tuple[int, ...], str]:
    """PUT a replica's float32 vectors and receipt by their pre-signed URLs (worker side).

    Returns
    -------
    tuple
        ``(sha256, shape, dtype)`` of the vector bytes, as :meth:`ResultStore.write`.

    Raises
    ------
    GridError
        If an upload fails.
    """
    data = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
    sha = hashlib.sha256(data).hexdigest()
    shape = tuple(int(s) for s in vectors.shape)
    receipt = json.dumps({"sha256": sha, "shape": list(shape), "dtype": DTYPE}).encode()
    opts = {"endpoint": bool(transfer.get("endpoint")), "ca_file": transfer.get("ca_file")}
    _request(transfer["put_url"], data=data, what="the result vectors", **opts)
    _request(transfer["receipt_url"], data=receipt, what="the result receipt", **opts)
    return sha, shape, DTYPE
