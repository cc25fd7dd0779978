"""Training stage: training units against a bare torch loop, rounds on 1 vs 2 workers, validation.

Figures (baselines measured in this run, medians of >= 3):

- ``training unit tiles/s``: one training unit as a worker runs it
  (:func:`grid._training_task.compute_delta`: :func:`embeddings.local_steps` and the delta)
  against a bare torch loop of the same model and batch written here (the same frozen encoder
  features of the same views, the same head, AdamW, InfoNCE, the same steps), 1 thread.
- ``round time, 2 workers``: median wall time of a round of :func:`grid.run_training` on a
  LocalCluster with 2 worker processes against 1 (quorum 1, the operator's own processes).
- ``round time, quorum 2``: the same rounds with every unit replicated on both workers and
  validated, against quorum 1 on the same 2 workers: the cost of validating training units.
- ``replicas per accepted unit``: of that quorum-2 run (2.0 when every pair agrees).
- ``honest rel diff`` / ``honest 1 - cos``: between the deltas of one unit computed with 1 and
  2 torch threads (the calibration of :class:`grid.DeltaTolerance`), against its tolerance.
- ``sky-pairs steps/s, nanny malloc setting, thresholds kept``: :func:`embeddings.local_steps`
  of the ``sky-pairs`` recipe in a fresh process started with ``MALLOC_TRIM_THRESHOLD_=65536``
  (what a Dask nanny gives its worker) after :func:`grid._worker.keep_freed_memory`, against
  the same process without that call; 1 thread, the two alternated, medians of 3.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import Figure

STAGE = "training"
HST = Path(__file__).resolve().parents[2] / "shared" / "data" / "hst"


def _store(root: Path, quick: bool):
    """Real HST tiles (47 Tuc, stride 112) when the shared files are here, else synthetic."""
    from tiling import TileStore, TilingConfig

    src = HST / "drizzle_reference_square_image_acs-hrc_f606w_ngc104.fits"
    if src.exists():
        store = TileStore.create(
            root / "tiles",
            TilingConfig(zooms=(1,), stride=112, unit_size=16, measure_sources=False),
        )
        store.add_mosaic(src)
        return store, "real HST tiles (ACS/HRC F606W, 47 Tuc)"
    from grid._selftest import synthetic_tile_store

    units = 4 if quick else 8
    return synthetic_tile_store(root, units=units, unit_size=16), "synthetic tiles"


def _bare_loop(model, state, tiles, recipe, seed: int, steps: int) -> None:
    """The same training written directly in torch: views, frozen features, head, AdamW."""
    import torch
    import torch.nn.functional as F

    from embeddings._tune import build_tuned_net
    from embeddings._views import make_views

    net = build_tuned_net(model, recipe)
    head = net.head
    head.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    gen = torch.Generator().manual_seed(seed)
    n, v = tiles.shape[0], recipe.views_per_tile
    views = make_views(torch.from_numpy(tiles), v, recipe.views, gen).flatten(0, 1)
    c, h, w = model.spec.input_size
    mode = model.spec.interpolation if model.spec.interpolation == "bicubic" else "bilinear"
    mean = torch.tensor(model.spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(model.spec.std).view(1, -1, 1, 1)
    with torch.no_grad():
        feats = []
        for i in range(0, views.shape[0], 32):
            x = views[i : i + 32].unsqueeze(1)
            if x.shape[-2:] != (h, w):
                x = F.interpolate(x, size=(h, w), mode=mode, antialias=True, align_corners=False)
            x = ((x - mean) / std).expand(-1, c, -1, -1).contiguous()
            feats.append(net.forward_features(x))
        bank = torch.cat(feats).view(n, v, *feats[0].shape[1:])
    params = list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    batch = min(recipe.batch_size, n)
    for _ in range(steps):
        idx = torch.randperm(n, generator=gen)[:batch]
        first = torch.randint(0, v, (batch,), generator=gen)
        second = (first + torch.randint(1, v, (batch,), generator=gen)) % v
        z1 = F.normalize(head(bank[idx, first]), dim=-1)
        z2 = F.normalize(head(bank[idx, second]), dim=-1)
        logits = z1 @ z2.T / recipe.temperature
        target = torch.arange(batch)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)


def _unit_figures(store, recipe, note: str, quick: bool) -> list[Figure]:
    import torch

    from embeddings import EmbedConfig, load_model, trainable_state
    from grid import DeltaTolerance
    from grid._deltas import compare_deltas, flatten
    from grid._training_task import compute_delta

    model = load_model(None, config=EmbedConfig(runtime="torch", threads=1))
    state = trainable_state(model, recipe)
    units = store.units()[:2]
    tiles = np.concatenate([store.read_unit(u.unit_key)[1] for u in units])
    steps = recipe.steps_per_unit
    torch.set_num_threads(1)
    compute_delta(model, state, tiles, recipe, seed=1, steps=1)  # warm-up
    ours, bare = [], []
    for i in range(3):  # alternate, so that load changes hit both alike
        t0 = time.perf_counter()
        d1 = compute_delta(model, state, tiles, recipe, seed=7, steps=steps)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _bare_loop(model, state, tiles, recipe, seed=7 + i, steps=steps)
        bare.append(time.perf_counter() - t0)
    torch.set_num_threads(2)
    d2 = compute_delta(model, state, tiles, recipe, seed=7, steps=steps)
    torch.set_num_threads(1)
    rel, cos = compare_deltas(flatten(d1), flatten(d2))
    tol = DeltaTolerance()
    n = len(tiles)
    return [
        Figure(
            STAGE,
            "training unit tiles/s (1 thread)",
            n / statistics.median(ours),
            "tiles/s",
            "bare torch loop",
            n / statistics.median(bare),
            goal=">= 0.9",
            note=f"{n} {note}, {recipe.views_per_tile} views each, {steps} steps of batch "
            f"{recipe.batch_size}; median of 3",
        ),
        Figure(
            STAGE,
            "honest rel diff (1 vs 2 threads)",
            rel,
            "",
            "tolerance max_rel_diff",
            tol.max_rel_diff,
            note="calibration of DeltaTolerance.max_rel_diff: honest differences stay far below",
        ),
        Figure(
            STAGE,
            "honest 1 - cos (1 vs 2 threads)",
            1.0 - cos,
            "",
            "tolerance 1 - min_cosine",
            1.0 - tol.min_cosine,
            note="calibration of DeltaTolerance.min_cosine",
        ),
    ]


def _round_figures(store, recipe, quick: bool) -> list[Figure]:
    from distributed import Client, LocalCluster

    from embeddings import EmbedConfig, load_model
    from grid import GridConfig, TrainingConfig, run_training

    base = load_model(None, config=EmbedConfig(runtime="torch"))
    rounds = 3
    shards = 4
    median = {}
    with tempfile.TemporaryDirectory(prefix="hubcat-bench-train-") as tmp:
        key = Path(tmp) / "ledger.key"
        training = TrainingConfig(rounds=rounds, shards=shards)
        for n in (1, 2):
            report = run_training(
                store,
                recipe,
                base=base,
                config=GridConfig(n_workers=n),
                training=training,
                work=str(Path(tmp) / f"w{n}"),
                ledger_key=key,
            )
            median[n] = statistics.median(report.round_times)
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
            Client(cluster) as client,
        ):
            q1 = run_training(
                store, recipe, base=base, client=client, config=GridConfig(min_quorum=1),
                training=training, work=str(Path(tmp) / "q1"), ledger_key=key,
            )  # fmt: skip
            q2 = run_training(
                store, recipe, base=base, client=client, config=GridConfig(min_quorum=2),
                training=training, work=str(Path(tmp) / "q2"), ledger_key=key,
            )  # fmt: skip
    q1_time = statistics.median(q1.round_times)
    q2_time = statistics.median(q2.round_times)
    return [
        Figure(
            STAGE,
            "round time, 2 workers",
            median[2],
            "s",
            "1 worker",
            median[1],
            goal="~0.5 on 2 cores",
            note=f"{shards} units/round, quorum 1, median of {rounds} rounds",
        ),
        Figure(
            STAGE,
            "round time, quorum 2 (validated)",
            q2_time,
            "s",
            "quorum 1, same 2 workers",
            q1_time,
            goal="~2 (every unit computed twice)",
        ),
        Figure(
            STAGE,
            "replicas per accepted unit (quorum 2)",
            q2.replicas_per_accepted_unit,
            "replicas",
            "quorum 1",
            q1.replicas_per_accepted_unit,
            note=f"{q2.replicas_invalid} rejected; agreement {q2.agreement}",
        ),
    ]


#: Runs local_steps of the sky-pairs recipe on the tiles of argv[1]; prints the seconds it took.
_MALLOC_PROBE = """
import sys, time
import numpy as np, torch
from dataclasses import replace
if sys.argv[2] == "kept":
    from grid._worker import keep_freed_memory
    keep_freed_memory()
from embeddings import EmbedConfig, load_base_net, named_recipe, trainable_state, local_steps
torch.set_num_threads(1)
tiles = np.load(sys.argv[1])
model = load_base_net("tf_efficientnet_lite0", EmbedConfig(runtime="torch", threads=1))
recipe = replace(named_recipe("sky-pairs"), views_per_tile=2, min_tiles=4)
state = trainable_state(model, recipe)
local_steps(model, state, tiles, recipe, seed=1, steps=1)  # warm-up
t0 = time.perf_counter()
local_steps(model, state, tiles, recipe, seed=2, steps=int(sys.argv[3]))
print(time.perf_counter() - t0)
"""


def _malloc_figure(store, quick: bool) -> list[Figure]:
    import os
    import subprocess
    import sys

    steps = 2 if quick else 4
    tiles = np.concatenate([store.read_unit(u.unit_key)[1] for u in store.units()])[:32]
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="hubcat-bench-malloc-") as tmp:
        path = Path(tmp) / "tiles.npy"
        np.save(path, tiles)
        env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
        times: dict[str, list[float]] = {"nanny": [], "kept": []}
        for _ in range(3):
            for mode in times:
                out = subprocess.run(
                    [sys.executable, "-c", _MALLOC_PROBE, str(path), mode, str(steps)],
                    env=env,
                    cwd=root,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                times[mode].append(float(out.stdout.split()[-1]))
    kept, nanny = statistics.median(times["kept"]), statistics.median(times["nanny"])
    return [
        Figure(
            STAGE,
            "sky-pairs steps/s, nanny malloc setting, thresholds kept",
            steps / kept,
            "steps/s",
            "nanny setting alone",
            steps / nanny,
            note=f"{len(tiles)} tiles, 2 views, batch 32, {steps} steps, 1 thread, fresh process "
            "each; medians of 3",
        )
    ]


def run(quick: bool = False) -> list[Figure]:
    from embeddings import TuneRecipe

    recipe = TuneRecipe(
        steps_per_unit=5 if quick else 20, batch_size=16, min_tiles=16, views_per_tile=2
    )
    with tempfile.TemporaryDirectory(prefix="hubcat-bench-tiles-") as tmp:
        store, note = _store(Path(tmp), quick)
        figures = _unit_figures(store, recipe, note, quick)
        figures += _round_figures(store, recipe, quick)
        figures += _malloc_figure(store, quick)
    return figures
