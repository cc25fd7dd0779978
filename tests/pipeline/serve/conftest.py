"""A real ``hubcat serve`` process on loopback, serving the shared test catalogue.

The service runs as a subprocess (``python -m pipeline serve ...``), the way an operator starts
it, on a free port of 127.0.0.1. Keys are made with the real key store; the usage ledger is
signed with a key made for the session.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    """A running service: its base URL, its process, and the files it uses."""

    url: str
    process: subprocess.Popen
    keys_file: Path | None
    ledger: Path | None
    signing_key: Path | None
    secrets: dict[str, str] = field(default_factory=dict)
    log: Path | None = None

    def headers(self, who: str | None) -> dict:
        return {"X-API-Key": self.secrets[who]} if who else {}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_service(
    catalogue: Path, workdir: Path, *args: str, keys_file=None, ledger=None, signing_key=None
) -> Service:
    """Start ``hubcat serve catalogue`` with ``args``; return once it answers HTTP."""
    import requests

    port = free_port()
    log = workdir / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "pipeline", "serve", str(catalogue), "--port", str(port), *args]
    if keys_file is not None:
        cmd += ["--keys", str(keys_file)]
    if ledger is not None:
        cmd += ["--usage", str(ledger)]
    if signing_key is not None:
        cmd += ["--signing-key", str(signing_key)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    service = Service(url, proc, keys_file, ledger, signing_key, log=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"hubcat serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            requests.get(url + "/openapi.json", timeout=2)
            return service
        except requests.ConnectionError:
            time.sleep(0.2)
    service.stop()
    pytest.fail(f"hubcat serve did not answer within 120 s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def serve_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="session")
def ledger_key(serve_dir) -> Path:
    """An Ed25519 key pair signing the usage ledgers of the test services."""
    from catalog.provenance import generate_signing_key, write_key_pair

    path = serve_dir / "ledger.key"
    write_key_pair(generate_signing_key("usage.test"), path)
    return path


@pytest.fixture(scope="session")
def operator_key(serve_dir) -> Path:
    """The operator key signing the served catalogue's checkpoints (public key beside it)."""
    from catalog.provenance import generate_signing_key, write_key_pair

    path = serve_dir / "operator.key"
    write_key_pair(generate_signing_key("operator.test"), path)
    return path


@pytest.fixture(scope="session")
def served_dir(stores, serve_dir, operator_key) -> Path:
    """The shared test tiles and vectors as a two-version catalogue signed by ``operator_key``
    (built from the session's embedded stores: nothing is embedded again)."""
    from catalog import Catalogue

    out = serve_dir / "catalogue"
    Catalogue.build(out, *stores["main"], signing_key=operator_key)
    Catalogue.build(out, *stores["ngc"], signing_key=operator_key)
    return out


@pytest.fixture(scope="session")
def cat(served_dir):
    """The served catalogue, opened in the test process (read-only use)."""
    from catalog import Catalogue

    return Catalogue.open(served_dir)


@pytest.fixture(scope="session")
def service(served_dir, serve_dir, ledger_key):
    """The service with keys (anonymous read-only at 100 req/s), a signed usage ledger.

    Keys: ``reader`` (read), ``imager`` (read + search-by-image), ``admin``, ``slow`` (1
    request/s, burst 2), ``thrifty`` (5 units a day), ``revoked`` (revoked before the start).
    """
    from pipeline.serve import KeyStore

    keys_file = serve_dir / "keys.json"
    store = KeyStore(keys_file)
    secrets = {}
    for name, scopes, extra in (
        ("reader", ["read"], {}),
        ("imager", ["read", "search-by-image"], {}),
        ("admin", ["admin"], {}),
        ("slow", ["read"], {"rate": 1.0, "burst": 2}),
        ("thrifty", ["read", "search-by-image"], {"daily": 5}),
        ("revoked", ["read"], {}),
        ("bench", ["read", "search-by-image"], {"rate": 1e6, "burst": 10**6, "daily": 10**9}),
    ):
        key, secret = store.add(name, scopes, **extra)
        secrets[name] = secret
        if name == "revoked":
            store.revoke(key.key_id)
    svc = start_service(
        served_dir,
        serve_dir,
        "--anonymous",
        "read",
        "--anonymous-rate",
        "100",  # the page and pyvo tests call anonymously; the key tests test the limits
        keys_file=keys_file,
        ledger=serve_dir / "usage.jsonl",
        signing_key=ledger_key,
    )
    svc.secrets = secrets
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def tile_ids(cat) -> list[str]:
    """Tile ids of the shared catalogue, in leaf order."""
    return [str(t) for t in cat.metadata()["tile_id"]]
