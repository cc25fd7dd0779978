"""``hubcat tune``: tune the encoder for the sky on a tile store's own tiles, on the grid."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from dataclasses import replace

from pipeline.commands._options import add_grid_dir, add_json, add_progress
from pipeline.commands._progress import StageBars

__all__ = ["register", "run_tune", "tiles_merkle_root", "tune_model"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"{text!r}: expected a positive integer"
        raise argparse.ArgumentTypeError(msg)
    return value


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        msg = f"{text!r}: expected a positive number of minutes, e.g. 60"
        raise argparse.ArgumentTypeError(msg)
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="tune the encoder on a tile store's own tiles (self-supervised, on the grid)",
        description=(
            "Self-supervised tuning of the embedding network on the tiles of --store: rounds of "
            "training units, each K local steps on one shard from the current global weights, "
            "run as replicas on distinct workers, validated (deltas compared within a "
            "calibrated tolerance; disagreement adds replicas), credited, and combined by an "
            "outer step. Writes a tuned model folder --out (weights, sha256, config and "
            "training record) that `hubcat run/reprocess --model MODEL_DIR` accept. A local "
            "cluster by default; --scheduler on the volunteer grid. Re-running the same "
            "command resumes after the last finished round."
        ),
    )
    parser.add_argument(
        "--store", required=True, metavar="TILES", help="tile store folder or s3://"
    )
    parser.add_argument("--out", required=True, metavar="MODEL_DIR", help="tuned model folder")
    parser.add_argument(
        "--base", metavar="NAME", help="base model name (default: tf_efficientnet_lite0)"
    )
    parser.add_argument("--weights", metavar="FILE", help="local weights file of --base")
    parser.add_argument(
        "--recipe",
        default="default",
        choices=("default", "same-sky", "sky-pairs"),
        help=(
            "starting recipe: 'default' (256-d, mean-pooled), 'same-sky' (8,192 "
            "background-centred codes, shifted views) or 'sky-pairs' (pairs of codes at fixed "
            "offsets beside the base vector, shifted views; see docs/tuning.md)"
        ),
    )
    parser.add_argument(
        "--budget",
        type=_minutes,
        default=60.0,
        metavar="MINUTES",
        help="wall-time budget; rounds stop when the next would not fit (default 60)",
    )
    parser.add_argument("--rounds", type=_positive, default=4, metavar="N", help="outer rounds")
    parser.add_argument(
        "--steps", type=_positive, metavar="K", help="local steps per training unit"
    )
    parser.add_argument("--shards", type=_positive, metavar="N", help="training units per round")
    parser.add_argument("--batch-size", type=_positive, metavar="N", help="tiles per step")
    parser.add_argument("--lr", type=float, metavar="LR", help="learning rate of the local steps")
    parser.add_argument("--seed", type=int, metavar="N", help="seed of the head and the shards")
    parser.add_argument(
        "--base-weight",
        type=float,
        metavar="W",
        help="share in [0, 1) of the frozen base model's cosine in the tuned model's (default 0)",
    )
    parser.add_argument(
        "--outer-lr", type=float, default=1.0, metavar="LR", help="outer step size (1: FedAvg)"
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler address, e.g. tls://HOST:8786 with --grid-dir (default: a local cluster)",
    )
    add_grid_dir(parser)
    parser.add_argument("--workers", type=_positive, metavar="N", help="local worker processes")
    add_json(parser)
    add_progress(parser)
    parser.set_defaults(func=run_tune)


def tiles_merkle_root(tiles: list[tuple[str, str]]) -> str:
    """RFC 6962 root (hex) of the tiles trained on: one leaf ``"<tile_id> <tile_sha256>"``
    (UTF-8) per tile, in training order."""
    from catalog.provenance import merkle_root

    return merkle_root([f"{tid} {sha}".encode() for tid, sha in tiles]).hex()


def tune_model(
    store,
    out,
    recipe,
    *,
    base_model=None,
    weights=None,
    client=None,
    config=None,
    training=None,
    progress=None,
):
    """Tune on ``store`` with :func:`grid.run_training` and save the tuned model in ``out``.

    Parameters
    ----------
    store : tiling.TileStore or str
    out : path-like
        The tuned model folder (:func:`embeddings.save_tuned_model`).
    recipe : embeddings.TuneRecipe
    base_model : embeddings.EmbeddingModel or None
        The base model, already loaded (default: ``recipe.base`` with ``weights``).
    weights : str or None
        Local weights file of the base model.
    client, config, training, progress
        As for :func:`grid.run_training`.

    Returns
    -------
    tuple
        ``(grid.TrainingReport, pathlib.Path or None)``: the folder is None when no unit was
        accepted (nothing tuned, nothing written).
    """
    from embeddings import EmbedConfig, load_model, save_tuned_model
    from grid import run_training

    if base_model is None:
        base_model = load_model(recipe.base, weights, config=EmbedConfig(runtime="torch"))
    report = run_training(
        store,
        recipe,
        model_name=recipe.base,
        weights=weights,
        base=base_model,
        client=client,
        config=config,
        training=training,
        progress=progress,
    )
    if not report.units_accepted:
        return report, None
    record = {
        **report.record(),
        "tiles_merkle_root": tiles_merkle_root(report.tiles),
        "tile_store": str(getattr(store, "uri", store)),
        "objective": recipe.objective,
        "seed": int(recipe.seed),
        "steps": report.steps,
    }
    path = save_tuned_model(out, base_model, report.state, recipe, record)
    return report, path


def run_tune(args: argparse.Namespace) -> int:
    """Run ``hubcat tune``; 0 when every round ran, 3 when some did not, 1 on bad input."""
    from embeddings import EmbedConfig, load_model, named_recipe
    from grid import GridConfig, TrainingConfig
    from pipeline._connect import operator_security, scheduler_client
    from tiling import TileStore

    if not args.verbose:
        logging.getLogger("distributed").setLevel(logging.ERROR)
    operator_security(args.scheduler, args.grid_dir)
    store = TileStore.open(args.store)
    overrides = {
        k: v
        for k, v in {
            "base": args.base,
            "steps_per_unit": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "base_weight": args.base_weight,
        }.items()
        if v is not None
    }
    recipe = replace(named_recipe(args.recipe), **overrides)
    base_model = load_model(recipe.base, args.weights, config=EmbedConfig(runtime="torch"))
    training = TrainingConfig(
        rounds=args.rounds,
        shards=args.shards,
        outer_lr=args.outer_lr,
        budget=args.budget * 60.0,
    )
    config = GridConfig(**({"n_workers": args.workers} if args.workers else {}))
    show = not (args.no_progress or args.json)
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(scheduler_client(args.scheduler, args.grid_dir))
        bars = stack.enter_context(StageBars()) if show else None
        report, path = tune_model(
            store,
            args.out,
            recipe,
            base_model=base_model,
            weights=args.weights,
            client=client,
            config=config,
            training=training,
            progress=bars,
        )
    summary = report.as_dict()
    summary["model_dir"] = str(path) if path else None
    if path is not None:
        from embeddings import read_model_config

        cfg = read_model_config(path)
        summary["weights_sha256"] = cfg["weights_sha256"]
        summary["model_name"] = cfg["name"]
    if args.json:
        json.dump(summary, sys.stdout, indent=1, sort_keys=True, default=str)
        print()
    else:
        print(f"hubcat tune: {report}")
        if path is None:
            print("  no training unit was accepted: nothing tuned, no model written")
        else:
            print(f"  tuned model {summary['model_name']} in {path}")
            print(f"  weights sha256 {summary['weights_sha256']}")
            print(f"  use it: hubcat reprocess CATALOGUE --model {path}")
        for r in report.rejected:
            print(
                f"  rejected: round {r['round']} {r['unit']} from {r['volunteer']}: {r['reason']}"
            )
    if path is None:
        return 1
    return 0 if report.rounds_done == report.rounds_planned else 3
