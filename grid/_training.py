"""``run_training``: data-parallel rounds of validated training units, and the outer step.

Each round, every shard of the tile store's units is one training unit: ``K`` local steps from
the round's global weights on that shard (:func:`embeddings.local_steps`), run as replicas on
distinct volunteers, each returning a weight delta through the result store. The operator
validates the replicas (:mod:`grid._deltas`), accepts a unit when a quorum agree within the
calibrated tolerance (more replicas on disagreement, as for embedding units), credits it in the
signed ledger, and then takes the outer step (FedAvg / DiLoCo with plain SGD as the outer
optimiser) ``global += outer_lr * mean(accepted deltas)``. The global weights never move on a
delta that was not accepted; a round without an accepted unit leaves them as they are.

Every round lives in ``round-NNNN/`` of the run's folder (``grid/tune/<run digest>/`` of the
tile store): its input weights (``results/global.npz``), unit records, deltas, and, once its
outer step is taken, ``next.npz`` and ``outer.json``. A stopped run re-run with the same
arguments resumes after its last finished outer step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from grid._config import GridConfig
from grid._deltas import state_bytes
from grid._run import GridReport, operator_context, start_local_cluster
from grid._training_config import TrainingConfig, TrainingReport
from grid._training_engine import Shard, TrainingEngine
from grid._training_task import load_state
from grid.errors import TrainingError
from hubcat.errors import StoreNotFoundError

__all__ = ["TrainingConfig", "TrainingReport", "plan_shards", "run_training"]

logger = logging.getLogger("grid.training")

#: Numerical class training units run in on every worker (torch, fp32).
TRAINING_CLASS = "torch-fp32"

Progress = Callable[[str, int, int, str], None]


def plan_shards(
    units: list, n_shards: int, round_index: int, seed: int, steps: int, min_tiles: int = 1
) -> list[Shard]:
    """The training units of one round: ``units`` cut into ``n_shards`` shards of whole units.

    The units, rotated by ``round_index`` positions so that each round groups them otherwise,
    are dealt in order into shards of about equal tile counts, none with fewer than
    ``min_tiles`` tiles (a short last shard joins the one before). Each shard's seed derives
    from ``(seed, round, shard)``, so the replicas of a unit run the same data order and a
    resumed run the same rounds.
    """
    if not units:
        return []
    k = round_index % len(units)
    order = units[k:] + units[:k]
    total = sum(len(u.tile_ids) for u in order)
    n_shards = max(1, min(n_shards, len(order), total // max(1, min_tiles) or 1))
    target = total / n_shards
    groups: list[list] = [[]]
    count = 0
    for unit in order:
        if count >= target * len(groups) and len(groups) < n_shards:
            groups.append([])
        groups[-1].append(unit)
        count += len(unit.tile_ids)
    if len(groups) > 1 and sum(len(u.tile_ids) for u in groups[-1]) < min_tiles:
        last = groups.pop()
        groups[-1].extend(last)
    shards = []
    for s, group in enumerate(groups):
        text = f"{seed}:{round_index}:{s}".encode()
        shard_seed = int.from_bytes(hashlib.sha256(text).digest()[:4], "little") & 0x7FFFFFFF
        shards.append(
            Shard(
                unit_key=f"r{round_index:04d}-s{s:03d}", units=group, seed=shard_seed, steps=steps
            )
        )
    return shards


@dataclass
class _Plan:
    """What every round of one run shares."""

    work: object
    tile_store: object
    model: object
    client: object
    config: GridConfig
    training: TrainingConfig
    recipe: object
    units: list
    n_shards: int
    steps: int
    min_tiles: int
    quorum: int
    local: bool
    ledger_key: object
    accounts: dict
    revoked: object
    model_name: str | None
    weights: str | None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_training(
    tile_store,
    recipe,
    *,
    model_name: str | None = None,
    weights: str | None = None,
    base=None,
    client=None,
    config: GridConfig | None = None,
    training: TrainingConfig | None = None,
    units: list | None = None,
    work=None,
    progress: Progress | None = None,
    grid_dir=None,
    ledger_key=None,
) -> TrainingReport:
    """Tune ``recipe``'s trainable weights on a tile store with validated grid training units.

    Parameters
    ----------
    tile_store : tiling.TileStore or str
        The tiles to train on (or the store's URI).
    recipe : embeddings.TuneRecipe
        Objective, batch, learning rate, seed, steps per unit.
    model_name, weights : str or None
        The base model, as for :func:`embeddings.load_model` (default ``recipe.base``); the
        workers load it by these and verify its weights' sha256.
    base : embeddings.EmbeddingModel or None
        The base model already loaded here (default: loaded from ``model_name``, ``weights``).
    client : distributed.Client or None
        A client of the grid scheduler; ``None`` starts a :class:`distributed.LocalCluster`.
    config : GridConfig or None
        Redundancy and worker settings, as for :func:`grid.run_units` (quorum 1 on a local
        cluster this call starts, 2 elsewhere).
    training : TrainingConfig or None
        Rounds, shards, steps, outer learning rate, tolerance, budget.
    units : list of tiling.UnitRef or None
        Train on these tile-store units only (default: all).
    work : str, ObjectStore or None
        Folder of the run's rounds (default ``grid/tune/<run digest>/`` of the tile store).
    progress : callable or None
        ``progress(stage, done, total, note)`` for each round (stage ``"training"``) and each
        accepted unit (stage ``"round N"``).
    grid_dir, ledger_key
        As for :func:`grid.run_units`.

    Returns
    -------
    TrainingReport

    Raises
    ------
    TrainingError
        If the store holds fewer than ``min_tiles`` tiles, or the budget is below one round
        (measured here on one local step), before any unit runs.
    embeddings.EmbeddingError
        If the base model cannot be loaded (e.g. its weights are absent).
    """
    from embeddings import EmbedConfig, load_model, trainable_state
    from hubcat.storage import open_object_store
    from tiling import TileStore

    t0 = time.perf_counter()
    config = config or GridConfig()
    training = training or TrainingConfig()
    if training.unit_timeout > config.replica_timeout:  # see TrainingConfig.unit_timeout
        config = replace(config, replica_timeout=training.unit_timeout)
    emit = progress or (lambda stage, done, total, note="": None)
    if not hasattr(tile_store, "units"):
        tile_store = TileStore.open(tile_store)
    units = list(units if units is not None else tile_store.units())
    n_tiles = sum(len(u.tile_ids) for u in units)
    min_tiles = max(training.min_tiles or 0, int(recipe.min_tiles))
    if n_tiles < min_tiles:
        msg = (
            f"tile store {tile_store.uri} holds {n_tiles} tile(s) in {len(units)} unit(s); "
            f"tuning needs at least {min_tiles} (a training unit's batch needs other tiles as "
            "negatives): tile more mosaics into it"
        )
        raise TrainingError(msg)
    model_name = model_name or recipe.base
    model = base or load_model(model_name, weights, config=EmbedConfig(runtime="torch"))
    state = {
        k: np.ascontiguousarray(v, dtype=np.float32)
        for k, v in trainable_state(model, recipe).items()
    }
    steps = training.steps or int(recipe.steps_per_unit)
    local = client is None
    quorum = config.quorum(local)
    n_shards = training.shards or min(len(units), 2 * config.n_workers if local else 8)
    n_shards = len(plan_shards(units, n_shards, 0, 0, 1, min_tiles))
    initial = state_bytes(state)
    run_id = _sha(
        json.dumps(
            {
                "recipe": recipe.digest(),
                "base": model.digest,
                "weights": model.weights_sha256,
                "initial": _sha(initial),
                "units": [u.sha256 for u in units],
                # budget and unit_timeout decide when to stop or re-place, not what is
                # computed: a run resumed with others is the same run
                "training": {
                    **{k: v for k, v in training.as_dict().items() if k != "unit_timeout"},
                    "budget": None,
                    "steps": steps,
                },
                "shards": n_shards,
                "grid": config.digest(),
                "quorum": quorum,
            },
            sort_keys=True,
        ).encode()
    )[:32]
    if work is None:
        work = tile_store.objects.child(f"grid/tune/{run_id}")
    elif isinstance(work, str):
        work = open_object_store(work)
    report = TrainingReport(
        run=run_id,
        work=work.uri,
        recipe_digest=recipe.digest(),
        base_model=str(model_name or model.name),
        base_weights_sha256=model.weights_sha256,
        base_digest=model.digest,
        seed=int(recipe.seed),
        steps=steps,
        rounds_planned=training.rounds,
        shards=n_shards,
        quorum=quorum,
        tolerance=training.tolerance.as_dict(),
        outer_lr=training.outer_lr,
        tiles=_tile_hashes(tile_store, units),
        initial_sha256=_sha(initial),
    )
    rounds = training.rounds
    if training.budget is not None:
        first = plan_shards(units, n_shards, 0, 0, steps, min_tiles)[0]
        per_round = _round_estimate(
            model, state, tile_store, first, recipe, n_shards, quorum, config
        )
        if per_round > training.budget:
            msg = (
                f"a budget of {training.budget / 60:.2f} min is less than one round: one round "
                f"of {n_shards} unit(s) x {steps} step(s) x quorum {quorum} takes about "
                f"{per_round / 60:.2f} min here (measured on one local step); give a budget of "
                f"at least {math.ceil(per_round / 60)} min, or fewer steps or shards"
            )
            raise TrainingError(msg)
    accounts, revoked, ledger_key = operator_context(client, grid_dir, ledger_key)
    work.put(
        "run.json",
        json.dumps(
            {
                "recipe": recipe.to_dict(),
                "training": training.as_dict(),
                "grid": config.as_dict(),
                "quorum": quorum,
                "shards": n_shards,
                "steps": steps,
                "base": report.base_model,
                "base_weights_sha256": model.weights_sha256,
            },
            indent=1,
            sort_keys=True,
            default=str,
        ).encode(),
    )
    volunteers: set[str] = set()
    agreement: list[tuple[float, float]] = []
    with contextlib.ExitStack() as stack:
        r = 0
        while r < rounds:  # rounds already finished (a resumed run) cost nothing
            done = _finished_round(work, r)
            if done is None:
                break
            state, info = done
            report.rounds_done += 1
            report.rounds_resumed += 1
            report.units_accepted += info["accepted"]
            volunteers.update(info.get("volunteers", []))
            r += 1
        emit("training", r, rounds, f"{r} round(s) resumed" if r else "")
        if r < rounds and local:
            import dask
            import distributed.config  # noqa: F401  (its defaults must exist before the set)

            stack.enter_context(
                dask.config.set(
                    {
                        "distributed.scheduler.allowed-failures": config.allowed_failures,
                        "distributed.scheduler.worker-ttl": config.worker_ttl,
                    }
                )
            )
            client = start_local_cluster(stack, config, model, model_name, weights, TRAINING_CLASS)
        while r < rounds:
            elapsed = time.perf_counter() - t0
            if training.budget is not None and report.round_times:
                if elapsed + max(report.round_times) > training.budget:
                    report.stopped = (
                        f"budget: {elapsed / 60:.1f} of {training.budget / 60:.1f} min used, "
                        f"a round takes {max(report.round_times) / 60:.1f} min"
                    )
                    break
            t_round = time.perf_counter()
            ctx = _Plan(
                work, tile_store, model, client, config, training, recipe, units, n_shards,
                steps, min_tiles, quorum, local, ledger_key, accounts, revoked, model_name,
                weights,
            )  # fmt: skip
            state, info = _run_round(ctx, r, state, emit, report)
            volunteers.update(info["volunteers"])
            agreement += info["agreement"]
            report.round_times.append(time.perf_counter() - t_round)
            report.rounds_done += 1
            r += 1
            emit("training", r, rounds, f"round {r}: {info['accepted']} unit(s) accepted")
    if report.rounds_done < training.rounds and not report.stopped:
        report.stopped = f"{training.rounds - report.rounds_done} round(s) not run"
    report.state = state
    report.state_sha256 = _sha(state_bytes(state))
    report.volunteers = sorted(volunteers)
    if agreement:
        report.agreement = {
            "pairs": len(agreement),
            "max_rel_diff": max(a for a, _ in agreement),
            "min_cosine": min(c for _, c in agreement),
        }
    report.elapsed = time.perf_counter() - t0
    return report


def _tile_hashes(tile_store, units) -> list[tuple[str, str]]:
    """``(tile_id, tile_sha256)`` of every tile trained on, in unit order."""
    meta = tile_store.metadata()
    sha = dict(zip(meta["tile_id"].astype(str), meta["tile_sha256"].astype(str), strict=False))
    return [(str(t), sha.get(str(t), "")) for u in units for t in u.tile_ids]


def _finished_round(work, r: int):
    """``(next state, outer.json)`` of round ``r`` if its outer step was taken, else None."""
    try:
        info = json.loads(work.get(f"round-{r:04d}/outer.json"))
        data = work.get(f"round-{r:04d}/next.npz")
    except StoreNotFoundError:
        return None
    return load_state(data, info["next_sha256"], f"round {r}"), info


def _run_round(ctx: _Plan, r: int, state: dict, emit: Progress, report: TrainingReport):
    """Run round ``r`` from ``state``; take its outer step; return ``(next state, info)``."""
    work, training, recipe, model = ctx.work, ctx.training, ctx.recipe, ctx.model
    root = work.child(f"round-{r:04d}")
    data = state_bytes(state)
    sha = _sha(data)
    root.child("results").put("global.npz", data)
    shards = plan_shards(ctx.units, ctx.n_shards, r, int(recipe.seed), ctx.steps, ctx.min_tiles)
    sub = GridReport(model_name=str(ctx.model_name), model_digest=model.digest)
    engine = TrainingEngine(
        ctx.tile_store,
        model,
        ctx.client,
        ctx.config,
        ctx.quorum,
        ctx.local,
        sub,
        root=root,
        state=state,
        state_key="global.npz",
        state_sha256=sha,
        state_data=data,
        recipe=recipe,
        tolerance=training.tolerance,
        ledger_key=ctx.ledger_key,
        accounts=ctx.accounts,
        revoked=ctx.revoked,
        model_name=ctx.model_name,
        weights=None if ctx.weights is None else str(ctx.weights),
    )
    stage = f"round {r + 1}"
    engine.start()
    try:
        engine.run(shards, lambda done: emit(stage, done, len(shards), ""))
    finally:
        engine.close()
    accepted = engine.accepted_deltas()  # re-read and re-checked against what was validated
    for rec in engine.units.values():
        for rep in rec["replicas"].values():
            if rep["status"] == "invalid":
                report.rejected.append(
                    {
                        "round": r,
                        "unit": rec["unit_key"],
                        "volunteer": rep.get("worker"),
                        "reason": rep.get("reason", ""),
                    }
                )
    for name in sub.liars:
        if name not in report.liars:
            report.liars.append(name)
    report.units_accepted += len(accepted)
    report.units_disputed += len(shards) - len(accepted)
    report.replicas_run += sub.replicas_run
    report.replicas_invalid += sub.replicas_invalid
    report.replicas_failed += sub.replicas_failed
    report.replicas_lost += sub.replicas_lost
    if accepted:
        new = {
            k: (
                state[k]
                + np.float32(training.outer_lr)
                * np.mean([d[k] for _, d in accepted], axis=0, dtype=np.float64).astype(np.float32)
            ).astype(np.float32)
            for k in state
        }
    else:  # nothing validated: the global weights do not move
        logger.warning("round %d: no training unit was accepted; the weights are unchanged", r)
        new = state
    next_data = state_bytes(new)
    names = sorted(
        {
            v
            for rec in engine.units.values()
            for v in (rec.get("accepted") or {}).get("volunteers", [])
        }
    )
    info = {
        "round": r,
        "input_sha256": sha,
        "next_sha256": _sha(next_data),
        "accepted": len(accepted),
        "units": [k for k, _ in accepted],
        "volunteers": names,
        "outer_lr": training.outer_lr,
    }
    root.put("next.npz", next_data)
    root.put("outer.json", json.dumps(info, indent=1, sort_keys=True).encode())
    info["agreement"] = engine.agreement
    return new, info


def _round_estimate(model, state, tile_store, shard, recipe, n_shards, quorum, config) -> float:
    """Seconds one round takes here: one local step on the first shard measured, times the
    round's steps per worker thread (a lower bound on a grid of slower volunteers)."""
    from grid._training_task import compute_delta

    tiles = np.concatenate([tile_store.read_unit(u.unit_key)[1] for u in shard.units], axis=0)
    t = time.perf_counter()
    compute_delta(model, state, tiles, recipe, seed=0, steps=1)
    step = time.perf_counter() - t
    threads = max(1, config.n_workers * config.threads_per_worker)
    return step * shard.steps * math.ceil(n_shards * quorum / threads)
