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
from tiling.storage import LocalObjectStore


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


def test_ledger_credit_trust_and_chain(tmp_path):
    ledger = CreditLedger(LocalObjectStore(tmp_path / "ledger"))
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
    assert CreditLedger(ledger.store).streak("vol-a") == 0  # trust reset, credit kept
    ledger.verify()
    # editing an entry breaks the chain
    key = "0000000001.json"
    entry = json.loads(ledger.store.get(key))
    entry["credit"] = 1e9
    ledger.store.put(key, json.dumps(entry).encode())
    with pytest.raises(GridError, match="broken at entry 1"):
        CreditLedger(ledger.store).verify()


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
