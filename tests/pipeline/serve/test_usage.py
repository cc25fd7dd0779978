"""Rate limits, daily quotas and the signed usage ledger (``hubcat serve usage``)."""

from __future__ import annotations

import json

import pytest
import requests

from tests.pipeline.serve.test_access import hubcat

pytestmark = pytest.mark.slow


def _get(service, path, who, **params):
    return requests.get(service.url + path, params=params, headers=service.headers(who), timeout=60)


def test_rate_limit_is_429_with_retry_after(service, tile_ids):
    """The 'slow' key: 1 request/s after a burst of 2."""
    responses = [_get(service, f"/api/tiles/{tile_ids[0]}", "slow") for _ in range(6)]
    codes = [r.status_code for r in responses]
    assert codes[:2] == [200, 200]  # the burst
    refused = [r for r in responses if r.status_code == 429]
    assert refused, codes
    assert int(refused[0].headers["Retry-After"]) >= 1
    assert "rate limit of 1 requests/s (burst 2)" in refused[0].json()["error"]


def test_daily_quota_counts_cost(service, tile_ids):
    """The 'thrifty' key has 5 units a day: an image search (20) never fits; 5 look-ups do."""
    r = requests.post(
        service.url + "/api/similar/image",
        files={"file": ("x.png", b"x")},
        headers=service.headers("thrifty"),
        timeout=30,
    )
    assert r.status_code == 429 and "daily quota of 5 units" in r.json()["error"]
    assert int(r.headers["Retry-After"]) <= 86400
    codes = [
        _get(service, f"/api/similar/tile/{tile_ids[1]}", "thrifty", k=2).status_code
        for _ in range(6)
    ]
    assert codes == [200] * 5 + [429]
    assert _get(service, "/api/usage/me", "thrifty").json()["used_today"] == 5


def test_failed_requests_cost_nothing(service, tile_ids):
    before = _get(service, "/api/usage/me", "reader").json()["used_today"]
    assert _get(service, "/api/similar/tile/nope", "reader").status_code == 404
    assert _get(service, "/api/usage/me", "reader").json()["used_today"] == before


def test_the_ledger_is_signed_and_sums_cost_per_key(service, tile_ids, hst_dir, tmp_path):
    tid = tile_ids[0]
    png = _get(service, f"/api/tiles/{tid}/cutout.png", "imager").content
    r = requests.post(
        service.url + "/api/similar/image",
        files={"file": ("q.png", png)},
        headers=service.headers("imager"),
        timeout=120,
    )
    assert r.status_code == 200
    pub = str(service.signing_key) + ".pub"
    out = hubcat("usage", str(service.ledger), "--public-key", pub, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    imager = next(c for c in report["callers"].values() if c["name"] == "imager")
    assert imager["by_kind"]["image"] >= 20  # an image search costs 20 units, a look-up 1
    assert imager["by_kind"]["cutout"] >= 1
    # the admin route serves the same verified sums
    via_api = _get(service, "/api/usage", "admin").json()
    assert via_api["callers"][imager["caller"]]["by_kind"]["image"] >= 20

    # an edited entry breaks its signature; a removed one breaks the chain; both name the line
    lines = service.ledger.read_bytes().splitlines()
    edited = tmp_path / "edited.jsonl"
    entry = json.loads(lines[3])
    entry["cost"] = int(entry["cost"]) + 1  # a change whatever the entry cost
    edited.write_bytes(
        b"\n".join(
            [
                *lines[:3],
                json.dumps(entry, sort_keys=True, separators=(",", ":")).encode(),
                *lines[4:],
            ]
        )
        + b"\n"
    )
    removed = tmp_path / "removed.jsonl"
    removed.write_bytes(b"\n".join([*lines[:2], *lines[3:]]) + b"\n")
    for path, phrase in (
        (edited, "line 4: its signature does not verify"),
        (removed, "line 3: the chain is broken"),
    ):
        out = hubcat("usage", str(path), "--public-key", pub)
        assert out.returncode == 1 and phrase in out.stderr, out.stderr
    # a ledger signed by another key than the trusted one is refused
    from catalog.provenance import generate_signing_key
    from pipeline.serve import UsageLedgerError, read_ledger

    with pytest.raises(UsageLedgerError, match="not the trusted key"):
        read_ledger(service.ledger, generate_signing_key("someone.else").verifier)


def test_quotas_survive_a_restart(tmp_path, ledger_key):
    """Reopening a ledger continues its chain and gives today's units per caller back."""
    from catalog.provenance import load_signing_key
    from pipeline.serve import UsageLedger, read_ledger

    key = load_signing_key(ledger_key)
    path = tmp_path / "u.jsonl"
    first = UsageLedger(path, key)
    first.record(
        caller="key:a", name="a", route="/api/cone", kind="cone", cost=1, status=200, ms=1.0
    )
    first.record(
        caller="key:a",
        name="a",
        route="/api/similar/image",
        kind="image",
        cost=20,
        status=200,
        ms=9.0,
    )
    first.close()
    again = UsageLedger(path, key)
    assert again.today() == {"key:a": 21}
    again.record(
        caller="key:b", name="b", route="/api/cone", kind="cone", cost=1, status=200, ms=1.0
    )
    again.close()
    report = read_ledger(path, key.verifier)
    assert report.entries == 3
    assert report.callers["key:a"].units == 21 and report.callers["key:b"].units == 1
