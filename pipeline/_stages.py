"""The stages a run and a reprocess share: tiling sources, embedding units on the grid,
reporting progress, and filling the run summary.

Only this package draws progress (``drawn``); the stages below report to a callback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from hubcat.errors import HubcatError
from pipeline._state import RunState, SourceRecord
from pipeline._summary import RunSummary, SourceOutcome

__all__ = [
    "ProgressCallback",
    "Stages",
    "drawn",
    "embed_stage",
    "embed_units",
    "fill_catalogue",
    "norm_uri",
    "s3_endpoint",
    "tile_stage",
    "unit_events",
    "unit_reason",
]

log = logging.getLogger(__name__)


def norm_uri(uri: str | os.PathLike[str]) -> str:
    text = os.fspath(uri)
    if text.startswith("s3://"):
        return text.rstrip("/")
    if text.startswith("file://"):
        text = text[len("file://") :]
    return str(Path(text).expanduser().absolute())


@contextlib.contextmanager
def s3_endpoint(endpoint_url: str | None) -> Iterator[None]:
    """Point every boto3 client (here, in tiling, and in worker processes) at ``endpoint_url``."""
    if not endpoint_url:
        yield
        return
    saved = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = endpoint_url
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = saved


#: ``progress(stage, done, total, note)``: what a run reports to a caller that draws it.
#: ``stage`` is ``"tiling"``, ``"embedding"`` (units accepted), ``"catalogue"`` or
#: ``"message"`` (a line to show; ``note`` holds it, ``done`` and ``total`` are 0 and None).
ProgressCallback = Callable[[str, int, "int | None", str], None]


@contextlib.contextmanager
def drawn(progress: bool | ProgressCallback) -> Iterator[ProgressCallback | None]:
    """The callback a run reports to: the caller's, one that draws bars (``True``), or none."""
    if callable(progress):
        yield progress
    elif progress:
        from pipeline.commands._progress import StageBars

        with StageBars() as bars:
            yield bars
    else:
        yield None


class Stages:
    """Progress of a run's stages, reported to a callback (or nowhere when there is none)."""

    def __init__(self, progress: ProgressCallback | None) -> None:
        self.callback = progress

    def report(self, name: str, done: int, total: int | None, note: str = "") -> None:
        """Tell the callback (if any) that ``done`` of ``total`` steps of ``name`` are done."""
        if self.callback is not None:
            self.callback(name, done, total, note)

    @contextlib.contextmanager
    def stage(self, name: str, total: int | None):
        """Context manager yielding ``advance(n=1, note="")`` for a stage of ``total`` steps."""
        count = [0]
        self.report(name, 0, total, "")

        def advance(n: int = 1, note: str = "") -> None:
            count[0] += n
            self.report(name, count[0], total, note)

        yield advance

    def print(self, text: str) -> None:
        self.report("message", 0, None, text)


def tile_stage(tile_store, state: RunState, uris, retry_failed: bool, stages, advance):
    """Tile the sources not done yet with :func:`tiling.tile_sources`, recording each outcome
    in the run state as soon as it is known; returns the outcome of every source by URI."""
    from tiling import tile_sources

    outcomes: dict[str, SourceOutcome] = {}
    records: dict[str, SourceRecord] = {}
    for uri in uris:
        record = state.source(uri)
        name = uri.rsplit("/", 1)[-1]
        if record.status == "done":
            reason = "already tiled by an earlier run"
            outcomes[uri] = SourceOutcome(
                uri, "skipped", reason, record.tiles, mosaic_id=record.mosaic_id
            )
            advance(note=name)
        elif record.status == "failed" and not retry_failed:
            reason = f"failed in an earlier run ({record.reason}); retry with --retry-failed"
            outcomes[uri] = SourceOutcome(uri, "skipped", reason)
            advance(note=name)
        else:
            record.attempts += 1
            records[uri] = record

    def on_source(result) -> None:
        record = records[result.source]
        record.seconds = result.seconds
        if not result.ok:
            record.status, record.reason, record.error = "failed", result.reason, result.error
            state.write_source(record)
            stages.print(f"failed: {record.reason}")
            outcomes[record.uri] = SourceOutcome(
                record.uri, "failed", record.reason, seconds=record.seconds
            )
        else:
            report = result.report
            record.status, record.reason, record.error = "done", "", ""
            record.tiles = sum(m.tiles for m in report.mosaics)
            record.mosaic_id = ",".join(report.mosaic_ids)
            record.source_sha256 = report.source_sha256
            state.write_source(record)
            notes = []
            if report.already_present:
                notes.append("same content already in the tile store")
            notes.extend(f"HDU {h} skipped: {r}" for h, r in sorted(report.skipped_hdus.items()))
            notes.extend(report.warnings)
            outcomes[record.uri] = SourceOutcome(
                record.uri, "done", "; ".join(notes), record.tiles, record.seconds, record.mosaic_id
            )
        advance(note=record.uri.rsplit("/", 1)[-1])

    tile_sources(tile_store, list(records), on_source=on_source)
    return outcomes


def unit_reason(tile_store, emb_model, unit_key: str) -> str:
    """Why the grid did not accept ``unit_key`` (from its unit record)."""
    from grid import GridArea

    try:
        rec = GridArea(tile_store).records(emb_model.digest).get(unit_key)
    except (HubcatError, ValueError):
        rec = None
    if not rec:
        return "no accepted result"
    reasons = sorted(
        {r.get("reason", "") for r in rec.get("replicas", {}).values() if r.get("reason")}
    )
    return f"{rec.get('state', 'pending')}: " + (
        "; ".join(reasons) or "no quorum of agreeing results"
    )


def embed_stage(
    summary, tile_store, emb_model, model, weights, describe, *, stages, **grid_options
):
    """Embed the units of ``tile_store`` not yet in its embedding store; fill ``summary``.

    ``describe(units, reused, to_run)`` gives the line printed before the stage starts.
    Returns the :class:`embeddings.EmbeddingStore` of ``emb_model``.
    """
    from embeddings import EmbeddingStore

    t0 = time.perf_counter()
    units = tile_store.units()
    summary.tiles = len(tile_store.metadata())
    summary.units = len(units)
    embedding_store = EmbeddingStore(tile_store.uri, emb_model)
    todo = [u for u in units if not embedding_store.has(u.unit_key)]
    summary.units_reused = len(units) - len(todo)
    stages.print(describe(len(units), summary.units_reused, len(todo)))
    if todo:
        grid_options = {**grid_options, "callback": unit_events(stages, len(todo))}
        report = embed_units(tile_store, model, weights, **grid_options)
        # A local cluster is gone when the stage ends: only a grid scheduler's dashboard (which
        # outlives the run) belongs in the summary.
        external = grid_options.get("client") is not None or grid_options.get("scheduler")
        summary.dashboard = (report.dashboard or None) if external else None
        done_now = {u.unit_key for u in todo if embedding_store.has(u.unit_key)}
        summary.units_computed = len(done_now)
        failed = [u for u in todo if u.unit_key not in done_now]
        summary.units_failed = len(failed)
        summary.unit_failures = [
            {"unit_key": u.unit_key, "reason": unit_reason(tile_store, emb_model, u.unit_key)}
            for u in failed
        ]
    summary.stage_seconds["embedding"] = time.perf_counter() - t0
    return embedding_store


def unit_events(stages: Stages, total: int) -> Callable[[str, str], None]:
    """A :func:`grid.run_units` callback that reports accepted units as ``embedding`` steps,
    and the live dashboard link once, as a message."""
    accepted = [0]
    stages.report("embedding", 0, total)

    def on_event(event: str, unit_key: str) -> None:
        if event != "accepted":
            return
        if accepted[0] == 0:
            try:
                from distributed import default_client

                link = default_client().dashboard_link
            except (ImportError, ValueError):
                link = ""
            if link:
                stages.report("message", 0, None, f"Dask dashboard (while the run lasts): {link}")
        accepted[0] += 1
        stages.report("embedding", accepted[0], total, unit_key)

    return on_event


def embed_units(
    tile_store,
    model,
    weights,
    *,
    scheduler,
    client,
    grid_config,
    workers,
    callback=None,
):
    """Run the units that have no accepted vectors on the grid; return the grid's report."""
    from grid import GridConfig, run_units

    config = grid_config or GridConfig()
    if workers is not None and grid_config is None:
        config = GridConfig(n_workers=int(workers))
    own = None
    try:
        if client is None and scheduler:
            from distributed import Client

            client = own = Client(scheduler)
        return run_units(
            tile_store,
            model_name=model,
            weights=None if weights is None else os.fspath(weights),
            client=client,
            config=config,
            callback=callback,
        )
    finally:
        if own is not None:
            own.close()


def fill_catalogue(summary: RunSummary, manifest: dict) -> None:
    prov = manifest.get("provenance") or {}
    summary.merkle_root = prov.get("root") if isinstance(prov, dict) else None
    summary.catalogue_version = manifest.get("version")
    summary.catalogue_tiles = int(manifest.get("counts", {}).get("tiles", 0))
