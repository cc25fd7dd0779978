"""API keys and scopes: ``hubcat serve keys``, 401 without a valid key, 403 without the scope,
anonymous access as configured."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time

import pytest
import requests

from tests.pipeline.serve.conftest import free_port

pytestmark = pytest.mark.slow


def hubcat(*args: str) -> subprocess.CompletedProcess:
    """``hubcat serve ARGS`` through the real command line, in this process."""
    import contextlib
    import io

    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["serve", *args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_keys_add_list_revoke_store_only_hashes(tmp_path):
    keys = tmp_path / "keys.json"
    out = hubcat(
        "keys",
        "add",
        "alice",
        "--keys",
        str(keys),
        "--scopes",
        "read,search-by-image",
        "--daily",
        "500",
    )
    assert out.returncode == 0, out.stderr
    secret = next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("secret"))
    key_id = out.stdout.split()[2]
    text = keys.read_text()
    assert secret not in text  # never the secret itself
    import hashlib

    assert hashlib.sha256(secret.encode()).hexdigest() in text
    assert (keys.stat().st_mode & 0o777) == 0o600
    listed = json.loads(hubcat("keys", "list", "--keys", str(keys), "--json").stdout)
    assert listed == [
        {
            **listed[0],
            "key_id": key_id,
            "name": "alice",
            "scopes": ["read", "search-by-image"],
            "daily": 500,
            "revoked": "",
        }
    ]
    assert "sha256" not in listed[0]
    assert hubcat("keys", "revoke", key_id, "--keys", str(keys)).returncode == 0
    assert json.loads(hubcat("keys", "list", "--keys", str(keys), "--json").stdout)[0]["revoked"]
    bad = hubcat("keys", "add", "bob", "--keys", str(keys), "--scopes", "write")
    assert bad.returncode == 1 and "'write'" in bad.stderr and "read" in bad.stderr
    bad = hubcat("keys", "revoke", "ffffffff", "--keys", str(keys))
    assert bad.returncode == 1 and "no API key 'ffffffff'" in bad.stderr


def _get(service, path, headers=None, **params):
    return requests.get(service.url + path, params=params, headers=headers or {}, timeout=60)


def test_missing_or_wrong_key_is_401(service, tile_ids):
    tid = tile_ids[0]
    r = requests.post(
        service.url + "/api/similar/image", files={"file": ("x.png", b"x")}, timeout=30
    )
    assert r.status_code == 401 and "API key is needed" in r.json()["error"]
    for secret in (
        "hck_00000000_wrong",
        "nonsense",
        service.secrets["reader"] + "x",
        service.secrets["revoked"],
    ):
        r = _get(service, f"/api/similar/tile/{tid}", headers={"X-API-Key": secret})
        assert r.status_code == 401, secret
        assert "not valid here" in r.json()["error"]
    # the same key as a bearer token works
    r = _get(
        service,
        f"/api/similar/tile/{tid}",
        headers={"Authorization": "Bearer " + service.secrets["reader"]},
    )
    assert r.status_code == 200


def test_key_without_the_scope_is_403(service, tile_ids):
    r = requests.post(
        service.url + "/api/similar/image",
        files={"file": ("x.png", b"x")},
        headers=service.headers("reader"),
        timeout=30,
    )
    assert r.status_code == 403 and "'search-by-image'" in r.json()["error"]
    r = _get(service, "/api/usage", headers=service.headers("imager"))
    assert r.status_code == 403 and "'admin'" in r.json()["error"]
    assert _get(service, "/api/usage", headers=service.headers("admin")).status_code == 200


def test_anonymous_read_only(service, tile_ids):
    r = _get(service, f"/api/similar/tile/{tile_ids[0]}")
    assert r.status_code == 200
    assert _get(service, "/api/usage/me").json()["caller"] == "anon:127.0.0.1"


def test_a_key_revoked_while_serving_stops_working(service, tile_ids):
    from pipeline.serve import KeyStore

    store = KeyStore(service.keys_file)
    key, secret = store.add("temporary", ["read"])
    headers = {"X-API-Key": secret}
    assert _get(service, f"/api/tiles/{tile_ids[0]}", headers=headers).status_code == 200
    store.revoke(key.key_id)
    assert _get(service, f"/api/tiles/{tile_ids[0]}", headers=headers).status_code == 401


@contextlib.contextmanager
def in_process_server(app):
    """``app`` on a real uvicorn server in a thread, on a free loopback port; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_anonymous_off(cat, tmp_path):
    """With anonymous access off every route needs a key (a second, in-process uvicorn server)."""
    from pipeline.serve import KeyStore, ServeConfig, create_app

    store = KeyStore(tmp_path / "keys.json")
    _key, secret = store.add("only", ["read"])
    app = create_app(cat, config=ServeConfig(anonymous="off"), keys=store, warm=False)
    with in_process_server(app) as url:
        r = requests.get(url + "/api/info", timeout=10)
        assert r.status_code == 401 and "admits no anonymous requests" in r.json()["error"]
        r = requests.get(url + "/api/info", headers={"X-API-Key": secret}, timeout=10)
        assert r.status_code == 200 and r.json()["anonymous"] == "off"


def test_anonymous_read_only_at_a_low_rate(cat, tile_ids):
    from pipeline.serve import ServeConfig, create_app

    config = ServeConfig(anonymous="read", anonymous_rate=0.2, anonymous_burst=2)
    with in_process_server(create_app(cat, config=config, warm=False)) as url:
        codes = [
            requests.get(f"{url}/api/tiles/{tile_ids[0]}", timeout=10).status_code for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        r = requests.get(f"{url}/api/tiles/{tile_ids[0]}", timeout=10)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
