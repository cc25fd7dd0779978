"""``hubcat embed``: embed every tile of a tile store, next to the tiles, resumably."""

from __future__ import annotations

import argparse
import json
import sys
import time

from pipeline.commands._options import (
    add_grid_dir,
    add_json,
    add_progress,
    add_runtime_options,
    runtime_environment,
)
from pipeline.commands._progress import progress_bar

__all__ = ["embed_in_process", "register", "run_embed"]


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


def embed_in_process(store, model, *, progress: bool = True) -> dict:
    """Embed every unit of ``store`` that ``model``'s embedding store lacks, in this process.

    Parameters
    ----------
    store : tiling.TileStore
    model : embeddings.EmbeddingModel
    progress : bool
        Show a rich progress bar (tiles).

    Returns
    -------
    dict
        ``units``, ``units_done``, ``units_skipped``, ``tiles_done``, ``seconds``, ``digest``,
        ``embedding_store``.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from embeddings import EmbeddingStore, embed_tiles

    emb = EmbeddingStore(store, model)
    units = store.units()
    todo = [u for u in units if not emb.has(u.unit_key)]
    total = sum(len(u.tile_ids) for u in todo)
    t0 = time.perf_counter()
    done_tiles = 0
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(f"embedding ({model.name})", total=total)
        for ref in todo:
            tile_ids, tiles = store.read_unit(ref.unit_key)
            base = done_tiles
            vectors = embed_tiles(
                model, tiles, progress=lambda n, base=base: bar.update(task, completed=base + n)
            )
            emb.write(
                ref.unit_key,
                tile_ids,
                vectors,
                volunteers=["local"],
                numerical_class=model.numerical_class,
            )
            done_tiles += len(tile_ids)
    return {
        "units": len(units),
        "units_done": len(todo),
        "units_skipped": len(units) - len(todo),
        "tiles_done": done_tiles,
        "seconds": round(time.perf_counter() - t0, 3),
        "digest": model.digest,
        "numerical_class": model.numerical_class,
        "embedding_store": emb.uri,
    }


def run_embed(args: argparse.Namespace) -> int:
    """Run the command with ``--runtime``/``--precision`` as the embedding defaults."""
    with runtime_environment(args):
        return _run_embed(args)


def _run_embed(args: argparse.Namespace) -> int:
    """Run ``hubcat embed``; return 0 when every unit is embedded, 3 when some were not."""
    from embeddings import EmbedConfig, load_model
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
    if args.in_process:
        summary = embed_in_process(store, model, progress=progress)
        summary.update(mode="in-process", units_failed=0)
    else:
        from grid import GridConfig, run_units

        options = {}
        if args.workers:
            options["n_workers"] = args.workers
        if args.threads:
            options["threads_per_worker"] = args.threads
        from embeddings import EmbeddingStore

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
            "mode": "grid",
            "scheduler": args.scheduler or "local cluster",
            "units": report.units_planned + report.units_skipped,
            "units_done": report.units_accepted,
            "units_skipped": report.units_skipped,
            "units_failed": report.units_failed,
            "seconds": round(report.elapsed, 3),
            "digest": report.model_digest,
            "embedding_store": f"{store.uri.rstrip('/')}/embeddings/{report.model_digest}",
        }
        if report.units_failed:
            from pipeline.run import _unit_reason

            summary["unit_failures"] = [
                {"unit_key": u.unit_key, "reason": _unit_reason(store, model, u.unit_key)}
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
