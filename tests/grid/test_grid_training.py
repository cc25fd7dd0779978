"""Training units on the grid: delta validation, shards, and a tune run with a liar.

The liar test runs a real LocalCluster of three worker processes on a small store of real HST
tiles; one worker lies on every training unit (a perturbed, a scaled and a zero delta in turn).
Its deltas must be rejected, named in the report and the signed ledger, and the tuned weights
must equal those of an honest run within the tolerance.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest

from grid import (
    DeltaTolerance,
    GridConfig,
    GridConfigError,
    InvalidResultError,
    TrainingConfig,
    TrainingError,
    check_delta_bytes,
    compare_deltas,
    run_training,
)
from grid._deltas import DeltaStore, delta_bytes, flatten, max_delta_bytes
from grid._training import plan_shards
from hubcat.storage import LocalObjectStore


def like_state(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": rng.normal(size=(8, 4)).astype(np.float32),
        "fc1.bias": rng.normal(size=(8,)).astype(np.float32),
    }


def check(delta_or_data, like, receipt=None):
    if isinstance(delta_or_data, dict):
        data, receipt = delta_bytes(delta_or_data)
    else:
        data = delta_or_data
    return check_delta_bytes(receipt, data, like, label="unit u replica from vol-x")


# -- validation of one delta ---------------------------------------------------------------
def test_a_delta_roundtrips_through_the_result_store(tmp_path):
    like = like_state()
    delta = like_state(1)
    store = LocalObjectStore(tmp_path)
    sha, nbytes, fmt = DeltaStore.write_delta(store, "u", "r1", delta)
    receipt, data = DeltaStore(store).read("u", "r1", max_bytes=max_delta_bytes(like))
    assert receipt == {"sha256": sha, "nbytes": nbytes, "format": fmt}
    got = check(data, like, receipt)
    assert all(np.array_equal(got[k], delta[k]) for k in like)


def test_a_nan_delta_is_rejected_naming_the_replica():
    delta = like_state(1)
    delta["fc1.bias"][3] = np.nan
    with pytest.raises(InvalidResultError, match=r"vol-x.*NaN") as e:
        check(delta, like_state())
    assert e.value.reason == "nan"


@pytest.mark.parametrize(
    "change",
    [
        lambda d: {**d, "fc1.weight": d["fc1.weight"][:, :3].copy()},  # wrong shape
        lambda d: {"fc1.weight": d["fc1.weight"]},  # a tensor missing
        lambda d: {**d, "extra": np.zeros(2, np.float32)},  # a tensor too many
    ],
)
def test_a_delta_of_the_wrong_shape_is_rejected(change):
    with pytest.raises(InvalidResultError) as e:
        check(change(like_state(1)), like_state())
    assert e.value.reason == "shape"
    assert "vol-x" in str(e.value)


def test_a_delta_of_another_dtype_is_rejected():
    delta = {k: v.astype(np.float64) for k, v in like_state(1).items()}
    buf = io.BytesIO()
    np.savez(buf, **delta)
    data = buf.getvalue()
    receipt = {"sha256": hashlib.sha256(data).hexdigest(), "nbytes": len(data), "format": "npz"}
    with pytest.raises(InvalidResultError) as e:
        check(data, like_state(), receipt)
    assert e.value.reason in ("dtype", "shape")  # float64 is also twice the bytes allowed


def test_bytes_that_do_not_match_their_receipt_are_rejected():
    _, receipt = delta_bytes(like_state(1))
    forged, _ = delta_bytes(like_state(2))
    with pytest.raises(InvalidResultError) as e:
        check(forged, like_state(), receipt)
    assert e.value.reason == "hash"


def test_compressed_and_pickled_archives_are_refused_unread():
    like = like_state()
    buf = io.BytesIO()
    np.savez_compressed(buf, **like_state(1))
    data = buf.getvalue()
    receipt = {"sha256": hashlib.sha256(data).hexdigest(), "nbytes": len(data), "format": "npz"}
    with pytest.raises(InvalidResultError) as e:
        check(data, like, receipt)
    assert e.value.reason == "format"
    # an object array inside a well-named, stored archive: never unpickled
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for key, value in like.items():
            member = io.BytesIO()
            obj = np.empty(value.shape, dtype=object) if key == "fc1.bias" else value
            np.save(member, obj, allow_pickle=True)
            zf.writestr(f"{key}.npy", member.getvalue())
    data = buf.getvalue()
    receipt = {"sha256": hashlib.sha256(data).hexdigest(), "nbytes": len(data), "format": "npz"}
    with pytest.raises(InvalidResultError) as e:
        check(data, like, receipt)
    assert e.value.reason in ("format", "shape", "dtype")


def test_an_oversized_delta_is_rejected_before_it_is_parsed():
    like = like_state()
    data = b"\0" * (max_delta_bytes(like) + 1)
    receipt = {"sha256": hashlib.sha256(data).hexdigest(), "nbytes": len(data), "format": "npz"}
    with pytest.raises(InvalidResultError) as e:
        check(data, like, receipt)
    assert e.value.reason == "shape"


# -- comparison of replicas ----------------------------------------------------------------
def test_the_tolerance_needs_both_the_relative_norm_and_the_cosine():
    tol = DeltaTolerance(max_rel_diff=1e-3, min_cosine=0.99999)
    a = flatten(like_state(1))
    assert tol.agree(a, a.copy())
    assert tol.agree(a, a * (1 + 1e-5))
    scaled = a * 1.05  # cosine exactly 1: only the relative norm catches it
    assert compare_deltas(a, scaled)[1] == pytest.approx(1.0)
    assert not tol.agree(a, scaled)
    rng = np.random.default_rng(0)
    turned = a + rng.normal(0, 0.01 * np.linalg.norm(a) / np.sqrt(a.size), a.shape)
    assert not tol.agree(a, turned)
    assert not tol.agree(a, np.zeros_like(a))  # a free rider
    assert compare_deltas(np.zeros(3), np.zeros(3)) == (0.0, 1.0)
    with pytest.raises(GridConfigError):
        DeltaTolerance(max_rel_diff=-1)
    with pytest.raises(GridConfigError):
        DeltaTolerance(min_cosine=0)


class _Unit:
    def __init__(self, key, n):
        self.unit_key, self.tile_ids, self.sha256 = key, [f"{key}-{i}" for i in range(n)], key


def test_shards_are_whole_units_with_enough_tiles_and_rotate_by_round():
    units = [_Unit(f"u{i}", 3) for i in range(5)]
    shards = plan_shards(units, 3, 0, seed=7, steps=2, min_tiles=4)
    assert [len(s.tile_ids) for s in shards] and min(len(s.tile_ids) for s in shards) >= 4
    assert sorted(t for s in shards for t in s.tile_ids) == sorted(
        t for u in units for t in u.tile_ids
    )
    again = plan_shards(units, 3, 0, seed=7, steps=2, min_tiles=4)
    assert [s.seed for s in again] == [s.seed for s in shards]
    later = plan_shards(units, 3, 1, seed=7, steps=2, min_tiles=4)
    assert [s.seed for s in later] != [s.seed for s in shards]
    assert [u.unit_key for u in later[0].units] != [u.unit_key for u in shards[0].units]
    assert len(plan_shards(units, 10, 0, seed=0, steps=1, min_tiles=6)) == 2


def test_training_config_rejects_bad_values():
    for kwargs in ({"rounds": 0}, {"steps": 0}, {"outer_lr": 0}, {"budget": -1}):
        with pytest.raises(TrainingError, match=next(iter(kwargs))):
            TrainingConfig(**kwargs)


# -- bad inputs of a run -------------------------------------------------------------------
def tiny_recipe(**kw):
    from embeddings import TuneRecipe

    args = dict(
        steps_per_unit=2, batch_size=3, min_tiles=3, hidden=16, dim=8, views_per_tile=2, seed=3
    )
    return TuneRecipe(**{**args, **kw})


def test_too_few_tiles_is_refused_before_any_work(small_tile_store, tmp_path):
    with pytest.raises(TrainingError, match=r"holds 3 tile\(s\).*at least 16"):
        run_training(small_tile_store, tiny_recipe(min_tiles=16), ledger_key=tmp_path / "k")


def test_a_budget_below_one_round_is_refused_before_any_unit(small_tile_store, tmp_path):
    training = TrainingConfig(budget=1e-3)
    work = tmp_path / "work"
    with pytest.raises(TrainingError, match="less than one round"):
        run_training(
            small_tile_store,
            tiny_recipe(min_tiles=2),
            training=training,
            work=str(work),
            ledger_key=tmp_path / "k",
        )
    assert not work.exists()  # nothing was started


def test_a_base_model_without_weights_is_refused(small_tile_store, tmp_path):
    from embeddings.errors import WeightsUnavailableError

    missing = tmp_path / "no-such-weights.pth"
    with pytest.raises(WeightsUnavailableError, match="no-such-weights"):
        run_training(
            small_tile_store,
            tiny_recipe(min_tiles=2),
            weights=str(missing),
            work=str(tmp_path / "work"),
            ledger_key=tmp_path / "k",
        )
    assert not (tmp_path / "work").exists()


# -- a tune run with a liar among the workers ----------------------------------------------
@pytest.fixture(scope="module")
def real_store(tmp_path_factory, hst_dir):
    from tiling import TileStore, TilingConfig

    store = TileStore.create(
        tmp_path_factory.mktemp("tune-tiles") / "tiles",
        TilingConfig(zooms=(1,), stride=112, unit_size=3, measure_sources=False),
    )
    store.add_mosaic(hst_dir / "galsim_cosmos_147246.0_150.416558_1.998697_masknoise.fits")
    assert sum(len(u.tile_ids) for u in store.units()) >= 9  # 16: 4 x 4 at stride 112
    return store


@pytest.mark.grid
@pytest.mark.slow
@pytest.mark.timeout(240)  # without unit_timeout the unit is re-placed without end
def test_a_training_unit_longer_than_the_embedding_replica_timeout_is_accepted(
    real_store, tmp_path
):
    """Training units take minutes, embedding units seconds: under GridConfig.replica_timeout
    alone every replica of a slow unit was given up as lost and placed again without end. The
    training run's unit_timeout applies instead."""
    config = GridConfig(n_workers=1, replica_timeout=0.001)
    report = run_training(
        real_store,
        tiny_recipe(),
        config=config,
        training=TrainingConfig(rounds=1, shards=1),
        work=str(tmp_path / "work"),
        ledger_key=tmp_path / "k",
    )
    assert (report.rounds_done, report.units_accepted, report.replicas_lost) == (1, 1, 0)
    with pytest.raises(TrainingError, match="unit_timeout"):
        TrainingConfig(unit_timeout=0)


@pytest.mark.grid
@pytest.mark.slow
def test_a_liars_deltas_are_rejected_and_the_tuned_weights_equal_an_honest_runs(
    real_store, tmp_path
):
    from distributed import Client, LocalCluster

    from embeddings import EmbedConfig, load_model
    from grid._ledger import CreditLedger, load_ledger_key
    from grid._liar import LiarPlugin

    recipe = tiny_recipe()
    base = load_model(None, config=EmbedConfig(runtime="torch"))
    config = GridConfig(min_quorum=2, dispute_margin=0, max_replicas=3, n_workers=3)
    training = TrainingConfig(rounds=2, shards=3)
    key = tmp_path / "ledger.key"
    with (
        LocalCluster(
            n_workers=3, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(LiarPlugin(["2"], modes=("perturb", "scale", "zero")))
        lied = run_training(
            real_store, recipe, base=base, client=client, config=config, training=training,
            work=str(tmp_path / "with-liar"), ledger_key=key,
        )  # fmt: skip
        client.retire_workers(names=["2"], close_workers=True)
        client.wait_for_workers(2)
        honest = run_training(
            real_store, recipe, base=base, client=client, config=config, training=training,
            work=str(tmp_path / "honest"), ledger_key=key,
        )  # fmt: skip
    assert (lied.rounds_done, lied.units_accepted) == (2, 6)
    assert (honest.rounds_done, honest.units_accepted, honest.replicas_invalid) == (2, 6, 0)
    # the liar computed 2 replicas a round (least-busy placement), every one rejected
    assert lied.liars == ["2"]
    assert lied.replicas_invalid == 4 and {r["volunteer"] for r in lied.rejected} == {"2"}
    assert "2" not in lied.volunteers
    entries = CreditLedger(
        LocalObjectStore(real_store.uri).child("grid/ledger"), signing_key=load_ledger_key(key)
    ).verified_entries()
    assert {e["volunteer"] for e in entries if e["event"] == "invalid"} == {"2"}
    assert all(e["volunteer"] != "2" for e in entries if e["event"] == "valid")
    # the tuned weights equal the honest run's within the tolerance, and moved
    assert set(lied.state) == set(honest.state)
    a, b = flatten(lied.state), flatten(honest.state)
    rel, cos = compare_deltas(a, b)
    tol = training.tolerance
    assert rel <= tol.max_rel_diff and cos >= tol.min_cosine
    outer = json.loads((tmp_path / "with-liar" / "round-0001" / "outer.json").read_text())
    assert outer["accepted"] == 3
    assert lied.initial_sha256 == honest.initial_sha256 != lied.state_sha256
    assert lied.replicas_run == 16 and lied.replicas_per_accepted_unit == pytest.approx(16 / 6)
