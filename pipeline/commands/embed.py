"""``hubcat embed``: embed every tile of a tile store, next to the tiles, resumably."""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.commands._options import (
    add_grid_dir,
    add_json,
    add_progress,
    add_runtime_options,
    runtime_environment,
)
from pipeline.commands._progress import progress_bar

__all__ = ["register", "run_embed"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"{text!r}: expected a positive integer"
        raise argparse.ArgumentTypeError(msg)
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="embed every tile of a tile store with a pretrained model (skips finished units)",
        description=(
            "Embed the tiles of the tile store at --store (folder or s3:// prefix) with --model "
            "(default: tf_efficientnet_lite0 with its packaged ImageNet weights): each tile's 8 "
            "flips/rotations are embedded and pooled. Vectors are written next to the tiles under "
            "embeddings/<digest>/, where the digest covers model, weights, preprocessing, "
            "augmentations and precision; units already embedded with the same digest are "
            "skipped, so re-running resumes. By default the units run on a local Dask cluster "
            "(grid.run_units) with validation; --in-process runs them in this process."
        ),
    )
    parser.add_argument("--store", required=True, metavar="PATH", help="tile store folder or s3://")
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="registered or timm model name, hf-hub:..., or a tuned MODEL_DIR",
    )
    parser.add_argument("--weights", metavar="FILE", help="local weights (safetensors/state dict)")
    add_runtime_options(parser)
    parser.add_argument(
        "--in-process", action="store_true", help="embed in this process instead of on the grid"
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler address, e.g. tls://HOST:8786 with --grid-dir (default: a local cluster)",
    )
    add_grid_dir(parser)
    parser.add_argument("--workers", type=_positive, metavar="N", help="local worker processes")
    parser.add_argument(
        "--threads", type=_positive, metavar="N", help="inference threads (per worker on the grid)"
    )
    add_json(parser)
    add_progress(parser)
    parser.set_defaults(func=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    """Run the command with ``--runtime``/``--precision`` as the embedding defaults."""
    with runtime_environment(args):
        return _run_embed(args)


def _run_embed(args: argparse.Namespace) -> int:
    """Run ``hubcat embed``; return 0 when every unit is embedded, 3 when some were not."""
    from embeddings import EmbedConfig, EmbeddingStore, load_model
    from pipeline._connect import operator_security, scheduler_client
    from tiling import TileStore

    if args.in_process and args.scheduler:
        from embeddings.errors import EmbeddingError

        msg = "--in-process embeds in this process; it cannot be combined with --scheduler"
        raise EmbeddingError(msg)
    operator_security(args.scheduler, args.grid_dir)
    store = TileStore.open(args.store)
    model = load_model(args.model, args.weights, config=EmbedConfig(threads=args.threads))
    progress = not (args.no_progress or args.json)
    from grid import GridConfig, run_units

    options = {}
    if args.workers:
        options["n_workers"] = args.workers
    if args.threads:
        options["threads_per_worker"] = args.threads
    if args.in_process:  # the same units and records, on a worker thread of this process
        options.update(in_process=True, n_workers=1)
    emb = EmbeddingStore(store, model)
    todo = sum(not emb.has(u.unit_key) for u in store.units())
    with (
        scheduler_client(args.scheduler, args.grid_dir) as client,
        progress_bar("embedding", todo, enabled=progress) as update,
    ):
        accepted = [0]

        def on_event(event: str, unit_key: str) -> None:
            if event == "accepted":
                accepted[0] += 1
                update(accepted[0], note=unit_key)

        report = run_units(
            store,
            args.model,
            args.weights,
            client=client,
            config=GridConfig(**options),
            progress=False,  # the grid reports through on_event; this command draws
            callback=on_event,
        )
    summary = {
        "mode": "in-process" if args.in_process else "grid",
        "scheduler": args.scheduler or "local cluster",
        "units": report.units_planned + report.units_skipped,
        "units_done": report.units_accepted,
        "units_skipped": report.units_skipped,
        "units_failed": report.units_failed,
        "seconds": round(report.elapsed, 3),
        "digest": report.model_digest,
        "embedding_store": emb.uri,
    }
    if report.units_failed:
        from pipeline._stages import unit_reason

        summary["unit_failures"] = [
            {"unit_key": u.unit_key, "reason": unit_reason(store, model, u.unit_key)}
            for u in store.units()
            if not emb.has(u.unit_key)
        ]
    summary.update(model=model.name, weights_sha256=model.weights_sha256, dim=model.dim)
    summary.setdefault("numerical_class", model.numerical_class)
    if args.json:
        json.dump(summary, sys.stdout, indent=1)
        print()
    else:
        print(
            f"hubcat embed: {summary['units_done']} unit(s) embedded, "
            f"{summary['units_skipped']} already done, {summary['units_failed']} not accepted, "
            f"in {summary['seconds']:.1f} s ({summary['mode']})\n"
            f"  model {model.name} ({model.dim}-d), weights sha256 {model.weights_sha256}\n"
            f"  runtime {summary['numerical_class']}\n"
            f"  digest {summary['digest']}\n"
            f"  vectors in {summary['embedding_store']}"
        )
        for failure in summary.get("unit_failures", []):
            print(f"  not accepted: {failure['unit_key']}: {failure['reason']}")
    return 3 if summary["units_failed"] else 0
