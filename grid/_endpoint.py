"""The operator's replica endpoint: one read and one write capability per replica, over HTTPS.

When volunteers are not the operator's own processes and the tile store is a folder, nothing
of the operator's storage is shared with them. Instead the operator's process serves, for each
replica it submits, three capability URLs made of unguessable random tokens:

* ``GET  /u/<token>``: the unit's tiles (float32 little-endian, ``[n, 224, 224]``); the worker
  checks their sha256 against the one the operator put in the task;
* ``PUT  /r/<token>``: the replica's vectors, at most ``n x dim x 4`` bytes; the size is
  checked from ``Content-Length`` *before* a byte of the body is read;
* ``PUT  /c/<token>``: the replica's receipt (JSON, at most 4 kB);
* ``GET  /w/<token>``: for a training replica, the round's global weights
  (:meth:`ReplicaEndpoint.grant_training`), whose sha256 the worker checks.

Each token is good for one replica only, for one use, until the replica is settled; a token
for one replica can touch no other object, and nothing can be listed. The endpoint writes what
it receives into the run's result store (for a resumed run) and hands the bytes it received to
the validator (:meth:`ReplicaEndpoint.take`), so nothing written to storage by anyone else can
stand in for a volunteer's result.

Over a TLS grid the endpoint speaks HTTPS with the operator's certificate, and the worker
checks that the peer presents the *operator* role of the grid's CA (:func:`http_request`).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import secrets
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from grid._results import MAX_RECEIPT, ResultStore
from grid.errors import GridError

__all__ = ["ReplicaEndpoint", "http_request"]

logger = logging.getLogger("grid.endpoint")


@dataclass
class _Grant:
    kind: str  # "tiles", "blob", "vectors" or "receipt"
    replica: str
    unit_slug: str
    unit_key: str = ""
    max_bytes: int = 0
    used: bool = False
    expires: float = 0.0


@dataclass
class _Received:
    sha256: dict[str, str] = field(default_factory=dict)  # "vectors"/"receipt" -> sha256
    data: dict[str, bytes] = field(default_factory=dict)


class ReplicaEndpoint:
    """Serve per-replica capabilities for a folder tile store (operator side).

    Parameters
    ----------
    tile_store : tiling.TileStore
        Where the units' tiles are read.
    results : ResultStore
        Where received results are written.
    host : str
        Interface to listen on (volunteers must reach it; ``127.0.0.1`` for a loopback grid).
    port : int
        Port (0: any free port).
    advertise : str or None
        Host name volunteers use to reach the endpoint (default: ``host``).
    certfile, keyfile : str or None
        The operator's certificate and key: HTTPS when given.
    """

    def __init__(
        self,
        tile_store,
        results: ResultStore,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        advertise: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        self.tile_store = tile_store
        self.results = results
        self.grants: dict[str, _Grant] = {}
        self.received: dict[str, _Received] = {}
        self.lock = threading.Lock()
        self.refused = 0
        self._cache: tuple[str, bytes] | None = None
        self.blobs: dict[str, bytes] = {}
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # quiet; refusals are logged below
                pass

            def do_GET(self):
                endpoint._serve(self, "GET")

            def do_PUT(self):
                endpoint._serve(self, "PUT")

            def do_POST(self):
                endpoint._answer(self, 405, "method not allowed")

            do_DELETE = do_POST

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(certfile, keyfile)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.host = advertise or host
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def close(self) -> None:
        """Stop serving (every capability ends with it)."""
        self.server.shutdown()
        self.server.server_close()

    # -- capabilities --------------------------------------------------------------------
    def grant(self, unit, unit_slug: str, replica: str, dim: int, expires: float) -> dict:
        """The capability URLs of one replica (they go into its task).

        Parameters
        ----------
        unit : tiling.UnitRef
            The unit (its key, tile count and sha256).
        unit_slug, replica : str
            Names of the replica's result objects.
        dim : int
            Embedding dimension (bounds the vector upload).
        expires : float
            Lifetime of the capabilities (s).

        Returns
        -------
        dict
            ``get_url``, ``put_url``, ``receipt_url`` and the tiles' layout, the same form as
            :func:`grid._presign.presign_replica` so that a worker handles both alike.
        """
        n = len(unit.tile_ids)
        deadline = time.monotonic() + expires
        urls = {}
        with self.lock:
            for kind, prefix, limit in (
                ("tiles", "u", 0),
                ("vectors", "r", n * dim * 4),
                ("receipt", "c", MAX_RECEIPT),
            ):
                token = secrets.token_urlsafe(32)
                self.grants[token] = _Grant(
                    kind, replica, unit_slug, unit.unit_key, limit, expires=deadline
                )
                urls[kind] = f"{self.url}/{prefix}/{token}"
            self.received[replica] = _Received()
        return {
            "get_url": urls["tiles"],
            "put_url": urls["vectors"],
            "receipt_url": urls["receipt"],
            "chunk_shape": [n, 224, 224],
            "dtype": "<f4",
            "offset": 0,
            "fill_value": 0.0,
            "sha256": unit.sha256,
        }

    def grant_training(
        self, units: list, unit_slug: str, replica: str, blob: str, max_bytes: int, expires: float
    ) -> dict:
        """The capability URLs of one training replica (they go into its task).

        Parameters
        ----------
        units : list of tiling.UnitRef
            The tile-store units of the replica's shard (one read capability each).
        unit_slug, replica : str
            Names of the replica's result objects.
        blob : str
            Name of the global weights given to :meth:`publish` (one read capability).
        max_bytes : int
            Largest delta archive accepted (its size is checked before it is read).
        expires : float
            Lifetime of the capabilities (s).

        Returns
        -------
        dict
            ``tiles`` (one dict per unit, as :meth:`grant` gives: ``get_url`` and layout),
            ``weights_url``, ``put_url`` and ``receipt_url``.
        """
        deadline = time.monotonic() + expires
        tiles = []
        with self.lock:
            for unit in units:
                token = secrets.token_urlsafe(32)
                self.grants[token] = _Grant(
                    "tiles", replica, unit_slug, unit.unit_key, expires=deadline
                )
                n = len(unit.tile_ids)
                tiles.append(
                    {
                        "get_url": f"{self.url}/u/{token}",
                        "chunk_shape": [n, 224, 224],
                        "dtype": "<f4",
                        "offset": 0,
                        "fill_value": 0.0,
                        "sha256": unit.sha256,
                        "unit_key": unit.unit_key,
                        "n_tiles": n,
                    }
                )
            urls = {}
            for kind, prefix, limit, key in (
                ("blob", "w", 0, blob),
                ("vectors", "r", max_bytes, ""),
                ("receipt", "c", MAX_RECEIPT, ""),
            ):
                token = secrets.token_urlsafe(32)
                self.grants[token] = _Grant(kind, replica, unit_slug, key, limit, expires=deadline)
                urls[kind] = f"{self.url}/{prefix}/{token}"
            self.received[replica] = _Received()
        return {
            "tiles": tiles,
            "weights_url": urls["blob"],
            "put_url": urls["vectors"],
            "receipt_url": urls["receipt"],
        }

    def publish(self, name: str, data: bytes) -> None:
        """Serve ``data`` under ``name`` to training replicas granted it (global weights)."""
        with self.lock:
            self.blobs[name] = data

    def settle(self, replica: str) -> None:
        """End every capability of ``replica`` (it was validated, lost or cancelled)."""
        with self.lock:
            for token in [t for t, g in self.grants.items() if g.replica == replica]:
                del self.grants[token]

    def received_sha256(self, replica: str, kind: str = "vectors") -> str | None:
        """sha256 of the bytes received for ``replica`` (``None``: nothing received)."""
        rec = self.received.get(replica)
        return rec.sha256.get(kind) if rec else None

    def take(self, replica: str) -> tuple[bytes, bytes] | None:
        """``(receipt, vectors)`` exactly as received for ``replica``, once (then forgotten).

        The validator reads these rather than the stored copies, so that nothing written to
        storage by anyone else can stand in for what the volunteer sent.
        """
        with self.lock:
            rec = self.received.pop(replica, None)
        if rec is None or "receipt" not in rec.data or "vectors" not in rec.data:
            return None
        return rec.data["receipt"], rec.data["vectors"]

    # -- HTTP ----------------------------------------------------------------------------
    def _answer(self, h: BaseHTTPRequestHandler, code: int, text: str, body: bytes = b"") -> None:
        if code >= 400:
            self.refused += 1
            logger.warning("endpoint: %s %s refused (%d): %s", h.command, h.path[:12], code, text)
            body = text.encode()
        h.send_response(code)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Content-Type", "application/octet-stream" if code < 400 else "text/plain")
        if code >= 400:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urllib.parse.urlsplit(h.path).path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in ("u", "w", "r", "c"):
            self._answer(h, 404, "no such capability")
            return
        with self.lock:
            grant = self.grants.get(parts[1])
            kinds = {"u": "tiles", "w": "blob", "r": "vectors", "c": "receipt"}
            if grant is None or grant.kind != kinds[parts[0]] or time.monotonic() > grant.expires:
                grant = None
            elif method == "PUT" and grant.kind not in ("tiles", "blob"):
                if grant.used:
                    grant = None
                else:
                    grant.used = True
        if grant is None:
            self._answer(h, 403, "unknown, expired or used capability")
            return
        if method == "GET":
            if grant.kind == "blob":
                self._answer(h, 200, "", self.blobs.get(grant.unit_key, b""))
                return
            if grant.kind != "tiles":
                self._answer(h, 405, "this capability is write-only")
                return
            self._answer(h, 200, "", self._tiles(grant.unit_key))
            return
        if grant.kind in ("tiles", "blob"):
            self._answer(h, 405, "this capability is read-only")
            return
        try:
            length = int(h.headers.get("Content-Length", "-1"))
        except ValueError:
            length = -1
        if length < 0 or length > grant.max_bytes:
            self._answer(h, 413, f"{length} bytes, at most {grant.max_bytes} accepted")
            return
        data = h.rfile.read(length)
        if len(data) != length:
            self._answer(h, 400, "body shorter than Content-Length")
            return
        vkey, rkey = self.results.keys(grant.unit_slug, grant.replica)
        self.results.store.put(vkey if grant.kind == "vectors" else rkey, data)
        with self.lock:
            rec = self.received.setdefault(grant.replica, _Received())
            rec.sha256[grant.kind] = hashlib.sha256(data).hexdigest()
            rec.data[grant.kind] = data
        self._answer(h, 200, "")

    def _tiles(self, unit_key: str) -> bytes:
        cached = self._cache
        if cached is not None and cached[0] == unit_key:
            return cached[1]
        import numpy as np

        _, tiles = self.tile_store.read_unit(unit_key)
        data = np.ascontiguousarray(tiles, dtype="<f4").tobytes()
        self._cache = (unit_key, data)
        return data


def http_request(
    url: str, *, data: bytes | None = None, ca_file: str | None = None, timeout: float = 60.0
) -> tuple[int, bytes]:
    """GET (``data`` None) or PUT ``url``; for ``https``, only to a peer with the operator role.

    Parameters
    ----------
    url : str
        A capability URL of a :class:`ReplicaEndpoint`.
    data : bytes or None
        Body of a PUT.
    ca_file : str or None
        The grid's CA certificate (HTTPS): the peer must present a certificate of this CA
        whose role (OU) is ``operator``.
    timeout : float
        Socket timeout (s).

    Returns
    -------
    tuple
        ``(status, body)``.

    Raises
    ------
    GridError
        If an ``https`` peer is not the grid's operator, or the connection fails.
    """
    from grid._identity import peer_identity

    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        ctx = ssl.create_default_context(cafile=ca_file)
        ctx.check_hostname = False  # the operator's certificate names a role, not a host
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=ctx
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.connect()
        if parts.scheme == "https":
            peer = peer_identity(conn.sock.getpeercert())
            if peer is None or peer.role != "operator":
                msg = f"{parts.hostname}:{parts.port} is not the grid operator's endpoint"
                raise GridError(msg)
        method = "GET" if data is None else "PUT"
        headers = {"Content-Type": "application/octet-stream"}
        conn.request(method, parts.path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as exc:
        msg = f"cannot reach the operator's endpoint {parts.hostname}:{parts.port}: {exc}"
        raise GridError(msg) from None
    finally:
        conn.close()
