"""A bounded HTTP load client for ``hubcat serve``: a fixed list of requests, a fixed number of
concurrent clients (threads, one keep-alive session each), a deadline, loopback only.

Run as a second process (``python -m benchmarks._serve_load SPEC.json``) it prints one JSON
object: per-request latencies and status codes, wall time and requests/s. The spec is
``{"url": "http://127.0.0.1:PORT", "headers": {...}, "concurrency": 16, "max_seconds": 60,
"requests": [{"method": "GET", "path": "/api/...", "params": {...}}, {"method": "POST", "path":
..., "file": "PATH"}]}``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["run_load"]


def run_load(
    url: str,
    requests_: list[dict],
    *,
    headers: dict | None = None,
    concurrency: int = 16,
    max_seconds: float = 60.0,
) -> dict:
    """Send ``requests_`` to ``url`` from ``concurrency`` threads; stop at ``max_seconds``.

    Returns
    -------
    dict
        ``latencies_ms`` and ``status`` per request sent (in sending order), ``sent``,
        ``wall_s``, ``rps``, ``errors`` (exceptions, by text) and ``timed_out``.
    """
    import requests

    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        msg = f"the load client only talks to loopback, not {host!r}"
        raise ValueError(msg)
    files = {}
    for spec in requests_:
        if spec.get("file") and spec["file"] not in files:
            files[spec["file"]] = Path(spec["file"]).read_bytes()
    lock = threading.Lock()
    state = {"next": 0}
    latencies = [None] * len(requests_)
    status = [None] * len(requests_)
    errors: list[str] = []
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        session = requests.Session()
        session.headers.update(headers or {})
        while True:
            with lock:
                i = state["next"]
                if i >= len(requests_) or time.monotonic() > deadline:
                    return
                state["next"] = i + 1
            spec = requests_[i]
            t0 = time.perf_counter()
            try:
                if spec.get("method", "GET") == "POST":
                    name = Path(spec["file"]).name
                    r = session.post(
                        url + spec["path"],
                        params=spec.get("params"),
                        files={"file": (name, files[spec["file"]])},
                        timeout=max_seconds,
                    )
                else:
                    r = session.get(
                        url + spec["path"], params=spec.get("params"), timeout=max_seconds
                    )
                _ = r.content
                status[i] = r.status_code
            except requests.RequestException as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                status[i] = 0
            latencies[i] = (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max_seconds + 30)
    wall = time.perf_counter() - t0
    sent = [i for i, s in enumerate(status) if s is not None]
    return {
        "sent": len(sent),
        "latencies_ms": [latencies[i] for i in sent],
        "status": [status[i] for i in sent],
        "wall_s": wall,
        "rps": len(sent) / wall if wall > 0 else 0.0,
        "errors": errors[:20],
        "timed_out": len(sent) < len(requests_),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmarks._serve_load SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    out = run_load(
        spec["url"],
        spec["requests"],
        headers=spec.get("headers"),
        concurrency=int(spec.get("concurrency", 16)),
        max_seconds=float(spec.get("max_seconds", 60)),
    )
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
