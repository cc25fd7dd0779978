"""The operator's validator of one training round: :class:`grid._engine.Engine` for deltas.

A training unit is placed, attributed, validated, disputed, accepted and credited by the same
engine as an embedding unit (the same placement on distinct volunteers and accounts, the same
quorum and ``dispute_margin``, the same signed ledger, the same records on disk, the same
capability transfers). What differs is what a result is -- a weight delta checked by
:func:`grid._deltas.check_delta_bytes` and compared by :class:`grid._deltas.DeltaTolerance` --
and that a training unit never rests on one volunteer's word (no trusted singles, hence no
canaries): a wrong delta would move the global weights of every later round.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

from grid._deltas import DeltaStore, check_delta_bytes, compare_deltas, flatten, max_delta_bytes
from grid._engine import Engine
from grid._records import ReplicaStatus, UnitRecords, UnitState, slug
from grid._training_task import run_training_replica
from grid.errors import InvalidResultError

__all__ = ["Shard", "TrainingEngine", "training_credit"]

logger = logging.getLogger("grid.training")

#: FLOP of one training step on one image relative to a forward pass (forward + backward).
TRAIN_FLOP_FACTOR = 3.0


def training_credit(images: int, flop_per_forward: float) -> float:
    """Credit for ``images`` training images (forward and backward), in cobblestones."""
    return images * TRAIN_FLOP_FACTOR * flop_per_forward * 200.0 / 86400e9


@dataclass
class Shard:
    """One training unit of a round: the tile-store units it trains on, its seed and steps."""

    unit_key: str
    units: list = field(default_factory=list)  # tiling.UnitRef
    seed: int = 0
    steps: int = 1

    @property
    def tile_ids(self) -> list[str]:
        return [str(t) for u in self.units for t in u.tile_ids]


class TrainingEngine(Engine):
    """Place, validate, accept and credit the training units of one round.

    Parameters
    ----------
    tile_store, model, client, config, quorum, local, report, ledger_key, accounts, revoked,
    callback, model_name, weights
        As for :class:`grid._engine.Engine` (``model`` is the base model, verified on workers).
    root : hubcat.storage.ObjectStore
        The round's folder: ``units/`` (records), ``results/`` (deltas).
    state : dict of str to numpy.ndarray
        The round's global weights (what every delta must be shaped like).
    state_key, state_sha256 : str
        Key of the global weights archive under ``results/`` and its sha256.
    state_data : bytes
        The archive itself (served to replicas by the endpoint).
    recipe : embeddings.TuneRecipe
    tolerance : grid._deltas.DeltaTolerance
    """

    def __init__(
        self,
        tile_store,
        model,
        client,
        config,
        quorum: int,
        local: bool,
        report,
        *,
        root,
        state: dict,
        state_key: str,
        state_sha256: str,
        state_data: bytes,
        recipe,
        tolerance,
        ledger_key,
        accounts=None,
        revoked=None,
        callback=None,
        model_name=None,
        weights=None,
    ) -> None:
        super().__init__(
            tile_store,
            model,
            None,
            client,
            config,
            quorum,
            local,
            report,
            ledger_key=ledger_key,
            accounts=accounts,
            revoked=revoked,
            callback=callback,
            model_name=model_name,
            weights=weights,
        )
        self.root = root
        self.records = UnitRecords(root)
        self.results = DeltaStore(root.child("results"))
        self.state = state
        self.state_key = state_key
        self.state_sha256 = state_sha256
        self.state_data = state_data
        self.recipe = recipe
        self.tolerance = tolerance
        self.max_bytes = max_delta_bytes(state)
        self.shards: dict[str, Shard] = {}
        self.agreement: list[tuple[float, float]] = []  # (rel diff, cosine) within accepted groups

    # -- what differs from embedding units ------------------------------------------------
    def start(self) -> None:
        super().start()
        if self.endpoint is not None:
            self.endpoint.publish(self.state_key, self.state_data)

    def trusted(self, name: str) -> bool:
        return False  # every training unit needs a full quorum

    def allowed_class(self, cls: str) -> bool:
        return cls.startswith("torch-fp32")  # training runs in torch, fp32

    def resume(self, planned: list) -> None:
        for shard in planned:
            self.shards[shard.unit_key] = shard
            rec = self.load(shard)
            if rec["state"] == UnitState.ACCEPTED:
                try:
                    self.replica_vectors(rec, rec["accepted"]["replica"])
                except InvalidResultError as exc:  # its stored delta is gone or changed
                    logger.warning("training unit %s is recomputed: %s", rec["unit_key"], exc)
                    rec["state"], rec["accepted"], rec["replicas"] = UnitState.PENDING, None, {}
                    self.save(rec)
                    continue
                self.report.units_accepted += 1
            elif rec["state"] == UnitState.DISPUTED:
                rec["state"], rec["replicas"] = UnitState.PENDING, {}

    def reopen_singles(self, names: set[str]) -> None:
        return None  # no training unit is ever accepted on one volunteer's word

    def read_checked(self, rec: dict, rid: str, label: str, *, expect_sha: str | None = None):
        """A replica's delta and its sha256, validated (size checked before any read).

        Raises
        ------
        InvalidResultError
            As :func:`grid._deltas.check_delta_bytes`; ``"tampered"`` when the stored archive
            is not the one validated before.
        """
        got = self.endpoint.take(rid) if self.endpoint is not None else None
        if got is not None:
            receipt, data = DeltaStore.parse(got[0], got[1], label)
        else:
            receipt, data = self.results.read(slug(rec["unit_key"]), rid, max_bytes=self.max_bytes)
        delta = check_delta_bytes(receipt, data, self.state, label=label)
        if expect_sha is not None and expect_sha != receipt.get("sha256"):
            msg = f"{label}: the stored delta is not the one validated (changed in storage)"
            raise InvalidResultError("tampered", msg)
        return delta, receipt["sha256"]

    def replicas_agree(self, rec: dict, a, b) -> bool:
        return self.tolerance.agree(flatten(a), flatten(b))

    def accept(self, rec: dict, rid: str, group: list, valid: list) -> None:
        in_group = {o for o, _ in group}
        for o, orep in valid:
            if o not in in_group:
                self.invalid(rec, o, orep, "mismatch", "its delta disagrees with the accepted one")
        ref = flatten(self.replica_vectors(rec, rid))
        for o, _ in group:
            if o != rid:
                self.agreement.append(compare_deltas(ref, flatten(self.replica_vectors(rec, o))))
        volunteers = sorted({orep["worker"] for _, orep in group})
        rec["state"] = UnitState.ACCEPTED
        rec["accepted"] = {
            "replica": rid,
            "sha256": rec["replicas"][rid]["sha256"],
            "volunteers": volunteers,
            "single": False,
        }
        images = int(rec.get("steps", 1)) * int(self.recipe.batch_size)
        credit = training_credit(images, self.cfg.flop_per_forward)
        for name in volunteers:
            self.record_outcome(name, True)
            self.ledger.append(
                name,
                "valid",
                unit=rec["unit_key"],
                tiles=images,
                credit=credit,
                model_digest=self.model.digest,
            )
        self.cancel_surplus(rec)
        self.report.units_accepted += 1
        self.save(rec)
        self.emit("accepted", rec["unit_key"])

    def load(self, unit) -> dict:
        rec = super().load(unit)
        rec["steps"], rec["seed"] = unit.steps, unit.seed
        rec["units"] = [u.unit_key for u in unit.units]
        return rec

    def submit(self, rec: dict, *, workers: list[str] | None, kind: str = "replica") -> None:
        rid = uuid.uuid4().hex
        unit_slug = slug(rec["unit_key"])
        shard = self.shards[rec["unit_key"]]
        spec = {
            "unit_key": rec["unit_key"],
            "slug": unit_slug,
            "replica": rid,
            "units": [u.unit_key for u in shard.units],
            "tile_ids": shard.tile_ids,
            "model_name": self.model_name_arg,
            "weights": self.weights_arg,
            "weights_sha256": self.model.weights_sha256,
            "digest": self.model.digest,
            "recipe": self.recipe.to_dict(),
            "seed": shard.seed,
            "steps": shard.steps,
            "state_sha256": self.state_sha256,
            "tile_store": self.ts.uri,
            "results": self.results.uri,
            "state_key": self.state_key,
        }
        if self.transfer == "presigned":
            spec.update(self.presigned_training_spec(shard, unit_slug, rid))
        elif self.transfer == "endpoint":
            transfer = self.endpoint.grant_training(
                shard.units, unit_slug, rid, self.state_key, self.max_bytes, self.cfg.url_expires
            )
            spec.update(
                {"tile_store": None, "results": None, "transfer": {**transfer, "endpoint": True}}
            )
        fut = self.client.submit(
            run_training_replica,
            spec,
            key=f"hubcat-train-{rid}",
            workers=workers,
            allow_other_workers=False,
            pure=False,
            priority=10 if rec["replicas"] else 0,
        )
        addr = workers[0] if workers else ""
        rec["replicas"][rid] = {
            "worker": None,
            "placed": self.names.get(addr) if addr else None,
            "status": ReplicaStatus.RUNNING,
            "kind": kind,
            "reason": "",
        }
        self.futures[fut] = (rec["unit_key"], rid, time.monotonic(), kind, addr)

    def presigned_training_spec(self, shard: Shard, unit_slug: str, rid: str) -> dict:
        """Pre-signed URLs of one training replica: its chunks, the weights, its two results."""
        from grid._presign import chunk_layout

        seconds = self.cfg.url_expires
        tiles = []
        for unit in shard.units:
            layout = chunk_layout(self.ts, unit, self.zarr_meta)
            tiles.append(
                {
                    **layout,
                    "get_url": self.ts.objects.presigned_get_url(layout["key"], seconds),
                    "sha256": unit.sha256,
                    "unit_key": unit.unit_key,
                    "n_tiles": len(unit.tile_ids),
                }
            )
        akey, rkey = DeltaStore.keys(unit_slug, rid)
        store = self.results.store
        transfer = {
            "tiles": tiles,
            "weights_url": store.presigned_get_url(self.state_key, seconds),
            "put_url": store.presigned_put_url(akey, seconds),
            "receipt_url": store.presigned_put_url(rkey, seconds),
        }
        return {"tile_store": None, "results": None, "transfer": transfer}

    def accepted_deltas(self) -> list[tuple[str, dict]]:
        """``(unit_key, delta)`` of every accepted unit of the round, re-checked, in key order."""
        out = []
        for key in sorted(self.units):
            rec = self.units[key]
            if rec["state"] == UnitState.ACCEPTED:
                out.append((key, self.replica_vectors(rec, rec["accepted"]["replica"])))
        return out
