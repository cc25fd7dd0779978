"""Homogeneous redundancy on a real TLS grid: replicas of a unit are computed in one class."""

from __future__ import annotations

import pytest

from grid import GridAuthority, GridConfig, run_units
from grid._procs import start_scheduler, start_volunteer, stop_processes

pytestmark = [pytest.mark.grid, pytest.mark.slow]


def test_a_mixed_grid_validates_within_classes_and_accepts_every_unit(tmp_path):
    """A torch-only volunteer, an OpenVINO-only one and one that offers both (and, where this
    machine has native bf16, a bf16-only one, which an fp32 run must never use)."""
    from distributed import Client

    from embeddings import EmbeddingStore, load_model, runnable_classes
    from grid import UnitRecords
    from grid._selftest import synthetic_tile_store
    from hubcat.storage import open_object_store

    here = set(runnable_classes())
    if not {"torch-fp32", "openvino-fp32"} <= here:
        pytest.skip(f"needs torch and OpenVINO fp32 here; this machine computes {sorted(here)}")
    offers = {
        "vol-torch": "torch-fp32",
        "vol-openvino": "openvino-fp32",
        "vol-both": "torch-fp32,openvino-fp32",
    }
    bf16 = sorted(c for c in here if "-bf16" in c)
    if bf16:
        offers["vol-bf16"] = bf16[0]
    auth = GridAuthority.init(tmp_path / "pki")
    sched, address = start_scheduler(auth, tmp_path / "logs", worker_ttl="20s")
    procs = [sched]
    try:
        for name, classes in offers.items():
            env = {"HUBCAT_VOLUNTEER_CLASSES": classes}
            procs.append(start_volunteer(auth, address, tmp_path / "logs", name, env=env))
        store = synthetic_tile_store(tmp_path / "data", units=4, unit_size=1, seed=21)
        with Client(address, security=auth.security("operator"), timeout=60) as client:
            client.wait_for_workers(len(offers), timeout=240)
            config = GridConfig(min_quorum=2, dispute_margin=0, replica_timeout=90)
            report = run_units(
                store, client=client, config=config, progress=False, grid_dir=auth.directory
            )
        assert report.units_accepted == report.units_planned == 4
        assert not report.liars
        model = load_model()
        records = UnitRecords(open_object_store(store.uri).child(f"grid/{model.digest}")).all()
        used = set()
        for rec in records:
            cls = rec["class"]
            assert cls in ("torch-fp32", "openvino-fp32")
            used.add(cls)
            for rep in rec["replicas"].values():
                if rep["status"] in ("valid", "invalid"):
                    assert cls in offers[rep["worker"]].split(","), (rep["worker"], cls)
            assert "vol-bf16" not in rec["accepted"]["volunteers"]
        assert used == {"torch-fp32", "openvino-fp32"}  # both classes got units
        emb = EmbeddingStore(store, model)
        classes = {r.unit_key: r.numerical_class for r in emb.records()}
        assert classes == {r["unit_key"]: r["class"] for r in records}
    finally:
        stop_processes(procs)
