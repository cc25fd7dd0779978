"""Test helpers for S3: moto's real S3 server on loopback, and a proxy that injects faults.

The proxy is a plain HTTP forwarder between boto3 and the moto server. Rules make it answer a
matching request itself (throttling 503 SlowDown, 500, 403) or cut a response body short, a given
number of times, so botocore's retries and hubcat's error messages meet real HTTP failures.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

MAST_LAYOUT = "hst/public/{prefix}/{dataset}/{dataset}_{suffix}.fits"


def mast_key(dataset: str, suffix: str) -> str:
    """Key of a dataset's file in MAST's public HST layout."""
    return MAST_LAYOUT.format(prefix=dataset[:4], dataset=dataset, suffix=suffix)


def record_gets(store) -> list[tuple[str, int, str | None]]:
    """Record every successful GetObject of ``store``'s boto3 client, as it happens.

    Returns the list the client appends to: ``(key, bytes received, Range header or None)`` per
    request (clear it to start counting afresh).
    """
    got: list[tuple[str, int, str | None]] = []

    def remember(params, context, **kwargs):
        context["key"], context["range"] = params["Key"], params.get("Range")

    def count(http_response, parsed, model, context=None, **kwargs):
        if http_response.status_code < 300:
            got.append((context["key"], int(parsed["ContentLength"]), context["range"]))

    store.client.meta.events.register("before-parameter-build.s3.GetObject", remember)
    store.client.meta.events.register("after-call.s3.GetObject", count)
    return got


class S3Server:
    """A real S3-protocol server (moto's server mode) on a loopback port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.host, self.port = host, port
        self.endpoint_url = f"http://{host}:{port}"

    def client(self, **kwargs):
        """A boto3 S3 client for this server (dummy credentials)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=kwargs.pop("endpoint_url", self.endpoint_url),
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            **kwargs,
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` if absent; return ``s3://name``."""
        client = self.client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if name not in existing:
            client.create_bucket(Bucket=name)
        return f"s3://{name}"

    def stop(self) -> None:
        self._server.stop()


@dataclass
class Rule:
    """Answer ``times`` requests whose method and path match with ``action`` instead of moto.

    ``action`` is ``"throttle"`` (503 SlowDown), ``"error500"``, ``"forbidden"`` (403
    AccessDenied) or ``"truncate"`` (forward, then send only half of the body and close).
    """

    action: str
    path_contains: str
    method: str = "GET"
    times: int = 1
    hits: int = 0


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict = field(default_factory=dict)


_ERRORS = {
    "throttle": (503, "SlowDown", "Please reduce your request rate."),
    "error500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "forbidden": (403, "AccessDenied", "Access Denied"),
}


class FaultProxy:
    """HTTP proxy on 127.0.0.1 in front of an S3 server, with fault rules and a request log."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.rules: list[Rule] = []
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlparse(self.path)
                path = unquote(url.path)
                with proxy._lock:
                    proxy.requests.append(
                        Request(self.command, path, url.query, dict(self.headers))
                    )
                    rule = next(
                        (
                            r
                            for r in proxy.rules
                            if r.method == self.command
                            and r.path_contains in path
                            and r.hits < r.times
                        ),
                        None,
                    )
                    if rule is not None:
                        rule.hits += 1
                if rule is not None and rule.action in _ERRORS:
                    status, code, message = _ERRORS[rule.action]
                    payload = (
                        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                        f"<Message>{message}</Message><Key>{path}</Key></Error>"
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(upstream_host, upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                if rule is not None and rule.action == "truncate":
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.endpoint_url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, action: str, path_contains: str, *, method: str = "GET", times: int = 1) -> Rule:
        rule = Rule(action, path_contains, method, times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
