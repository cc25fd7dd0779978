"""Validator, replica comparison, credit ledger and configuration (no cluster)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from grid import (
    CreditLedger,
    GridConfig,
    GridConfigError,
    GridError,
    InvalidResultError,
    ResultStore,
    agree,
    check_replica,
    cobblestones,
)
from hubcat.storage import LocalObjectStore


def unit_vectors(n=3, d=16, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def receipt_for(data: bytes, shape=(3, 16), dtype="float32") -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "shape": list(shape), "dtype": dtype}


def check(receipt, data):
    return check_replica(receipt, data, n_tiles=3, dim=16, norm_tolerance=1e-3, label="r")


def test_valid_replica_roundtrip(tmp_path):
    store = LocalObjectStore(tmp_path)
    v = unit_vectors()
    sha, _shape, dtype = ResultStore.write(store, "u", "r1", v)
    receipt, data = ResultStore(store).read("u", "r1")
    assert receipt == {"sha256": sha, "shape": [3, 16], "dtype": dtype}
    np.testing.assert_array_equal(check(receipt, data), v)


def test_nan_rejected():
    v = unit_vectors()
    v[1, 2] = np.nan
    data = v.tobytes()
    with pytest.raises(InvalidResultError, match="NaN") as e:
        check(receipt_for(data), data)
    assert e.value.reason == "nan"


def test_wrong_shape_rejected():
    data = unit_vectors(d=8).tobytes()
    with pytest.raises(InvalidResultError, match="shape") as e:
        check(receipt_for(data, shape=(3, 8)), data)
    assert e.value.reason == "shape"
    # a receipt that claims the right shape for too few bytes
    with pytest.raises(InvalidResultError, match="bytes") as e:
        check(receipt_for(data), data)
    assert e.value.reason == "shape"


def test_wrong_dtype_rejected():
    data = unit_vectors().astype(np.float64).tobytes()
    with pytest.raises(InvalidResultError, match="dtype") as e:
        check(receipt_for(data, dtype="float64"), data)
    assert e.value.reason == "dtype"


def test_hash_mismatch_rejected():
    v = unit_vectors()
    receipt = receipt_for(v.tobytes())
    w = v.copy()
    w[0] = -w[0]
    with pytest.raises(InvalidResultError, match="hash") as e:
        check(receipt, w.tobytes())
    assert e.value.reason == "hash"


def test_bad_norm_rejected():
    data = (unit_vectors() * 1.5).tobytes()
    with pytest.raises(InvalidResultError, match="norm") as e:
        check(receipt_for(data), data)
    assert e.value.reason == "norm"


def test_missing_and_garbage_receipts(tmp_path):
    rs = ResultStore(LocalObjectStore(tmp_path))
    with pytest.raises(InvalidResultError) as e:
        rs.read("u", "none")
    assert e.value.reason == "missing"
    rs.store.put("u/x.f32", b"")
    rs.store.put("u/x.json", b"\x80\x04pickle")
    with pytest.raises(InvalidResultError) as e:
        rs.read("u", "x")
    assert e.value.reason == "receipt"


def test_agree_detects_plausible_perturbation():
    v = unit_vectors(n=4, d=1280)
    noisy = v + np.random.default_rng(1).normal(0, 0.003, v.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    assert np.allclose(np.linalg.norm(noisy, axis=1), 1, atol=1e-5)  # passes the norm check
    assert agree(v, v.copy(), 0.9999)
    assert not agree(v, noisy, 0.9999)
    assert not agree(v, v[:2], 0.9999)


def _key():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def test_ledger_credit_trust_and_chain(tmp_path):
    key = _key()
    ledger = CreditLedger(LocalObjectStore(tmp_path / "ledger"), signing_key=key)
    c = cobblestones(10, 0.77e9)
    assert c == pytest.approx(10 * 8 * 0.77e9 * 200 / 86400e9)
    for i in range(3):
        ledger.append("vol-a", "valid", unit=f"u{i}", tiles=10, credit=c)
    ledger.append("vol-b", "invalid", unit="u0", reason="nan")
    s = ledger.summary()
    assert (s["vol-a"].valid, s["vol-a"].streak, s["vol-a"].tiles) == (3, 3, 30)
    assert s["vol-a"].credit == pytest.approx(3 * c)
    assert (s["vol-b"].invalid, s["vol-b"].credit, s["vol-b"].streak) == (1, 0.0, 0)
    ledger.append("vol-a", "invalid", unit="u9", reason="mismatch")
    assert CreditLedger(ledger.store, public_key=key.public_key()).streak("vol-a") == 0
    assert ledger.verify().verified == 5
    # removing an entry breaks the chain
    removed = ledger.store.get("0000000002.json")
    ledger.store.delete("0000000002.json")
    with pytest.raises(GridError, match="broken at entry 2"):
        CreditLedger(ledger.store, public_key=key.public_key()).verify()
    ledger.store.put("0000000002.json", removed)


def test_forged_ledger_entries_are_named_and_never_counted(tmp_path):
    """The attack of the issue: entries edited from invalid to valid, and a dozen valid
    entries for a name that was never enrolled, with the hash chain recomputed to match."""
    from grid._ledger import _hash

    key = _key()
    ledger = CreditLedger(LocalObjectStore(tmp_path / "ledger"), signing_key=key)
    ledger.append("vol-a", "valid", unit="u0", tiles=10, credit=1.0)
    ledger.append("vol-liar", "invalid", unit="u1", reason="mismatch")
    # the forger rewrites entry 1 as valid and appends 12 entries for an unenrolled name,
    # keeping the hash chain consistent (the chain alone has no secret)
    entries = ledger.entries()
    forged = dict(entries[1], event="valid", credit=1e6, tiles=10, reason="")
    forged["hash"] = _hash(forged)
    ledger.store.put("0000000001.json", json.dumps(forged, sort_keys=True).encode())
    prev = forged["hash"]
    for i in range(12):
        e = {
            "seq": 2 + i,
            "time": 0.0,
            "volunteer": "vol-ghost",
            "event": "valid",
            "unit": f"g{i}",
            "tiles": 10,
            "credit": 1e6,
            "reason": "",
            "model_digest": "",
            "prev": prev,
            "sig": forged.get("sig", ""),
        }
        e["hash"] = _hash(e)
        prev = e["hash"]
        ledger.store.put(f"{2 + i:010d}.json", json.dumps(e).encode())
    reader = CreditLedger(ledger.store, public_key=key.public_key())
    report = reader.check()
    assert report.unsigned == list(range(1, 14)) and report.verified == 1
    with pytest.raises(GridError, match=r"entries 1, 2, .* are not signed"):
        reader.verify()
    summary = reader.summary()
    assert "vol-ghost" not in summary
    assert "vol-liar" not in summary  # its edited entry no longer counts at all
    assert reader.streak("vol-ghost") == 0
    # a ledger key of someone else's signs nothing that counts
    other = CreditLedger(ledger.store, signing_key=_key())
    other.append("vol-ghost", "valid", unit="x", tiles=1, credit=5.0)
    assert "vol-ghost" not in CreditLedger(ledger.store, public_key=key.public_key()).summary()
    with pytest.raises(GridError, match="read-only"):
        reader.append("vol-a", "valid")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_quorum": 0},
        {"min_quorum": 6, "max_replicas": 5},
        {"min_cosine": 1.5},
        {"spot_check_rate": -0.1},
        {"n_workers": 0},
        {"replica_timeout": 0},
    ],
)
def test_config_rejects_bad_values(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(GridConfigError, match=f"GridConfig.{name}="):
        GridConfig(**kwargs)


def test_config_quorum_and_digest():
    assert GridConfig().quorum(local=True) == 1
    assert GridConfig().quorum(local=False) == 2
    assert GridConfig(min_quorum=3).quorum(local=True) == 3
    assert GridConfig().digest() != GridConfig(min_cosine=0.999).digest()
    assert GridConfig().digest() == GridConfig(n_workers=7).digest()
