"""One resumable run: tile every source, embed the tiles on the grid, build the catalogue.

>>> from pipeline.run import run_pipeline
>>> summary = run_pipeline(["data/*.fits", "s3://bucket/mosaics/"], "catalogue/")
>>> print(summary.render()); summary.merkle_root

The run records its plan and the state of every source under ``<catalogue>/run/`` (see
:mod:`pipeline._state`) and relies on the stores' own atomic records for finished work: a tiled
mosaic is in the tile store, an accepted unit is in the embedding store. Killed at any moment
(Ctrl-C, SIGKILL, machine loss), the same call continues where it stopped, recomputes nothing that
was stored, and gives the same catalogue (same Merkle root) as an uninterrupted run. One bad
source, one failing object or one failing unit never stops the batch: it is listed with its
reason and can be retried alone (``retry_failed=True``, ``hubcat run --retry-failed``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence

from hubcat.storage import join_uri, open_object_store
from pipeline._sources import resolve_sources
from pipeline._stages import (
    ProgressCallback,
    Stages,
    drawn,
    embed_stage,
    fill_catalogue,
    norm_uri,
    s3_endpoint,
    tile_stage,
)
from pipeline._state import RunPlan, RunState, now
from pipeline._summary import RunSummary, SourceOutcome

__all__ = [
    "RunSummary",
    "SourceOutcome",
    "open_run_state",
    "run_pipeline",
    "tile_store_uri",
]

log = logging.getLogger(__name__)

#: Where the tile store goes when no ``store`` is given: beside the catalogue's files.
DEFAULT_STORE = "tiles"


def tile_store_uri(out: str | os.PathLike[str], store: str | os.PathLike[str] | None = None) -> str:
    """URI of the tile store of the catalogue ``out`` (``<out>/tiles`` unless ``store`` given)."""
    if store is not None:
        return norm_uri(store)
    return join_uri(norm_uri(out), DEFAULT_STORE)


def open_run_state(out: str | os.PathLike[str]) -> RunState:
    """The run record of catalogue ``out`` (``<out>/run/``)."""
    return RunState(open_object_store(norm_uri(out)))


def _tiling_config(zooms, stride, unit_size, tiling_config):
    """The tiling configuration asked for, or None when nothing was (then the recorded one)."""
    from tiling import TilingConfig

    if tiling_config is not None:
        return tiling_config
    if zooms is None and stride is None and unit_size is None:
        return None
    kwargs: dict = {}
    if zooms is not None:
        kwargs["zooms"] = tuple(zooms)
    if stride is not None:
        kwargs["stride"] = stride
    if unit_size is not None:
        kwargs["unit_size"] = unit_size
    return TilingConfig(**kwargs)


def run_pipeline(
    sources: Iterable[str | os.PathLike[str]] = (),
    out: str | os.PathLike[str] = "catalogue",
    *,
    store: str | os.PathLike[str] | None = None,
    scheduler: str | None = None,
    client=None,
    model: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    zooms: Sequence[int] | None = None,
    stride: int | None = None,
    unit_size: int | None = None,
    tiling_config=None,
    grid_config=None,
    signing_key=None,
    workers: int | None = None,
    mast: Sequence[str] = (),
    suffix: str = "drz",
    endpoint_url: str | None = None,
    retry_failed: bool = False,
    progress: bool | ProgressCallback = True,
) -> RunSummary:
    """Tile, embed and catalogue ``sources`` into ``out``, resuming any earlier run there.

    Parameters
    ----------
    sources : iterable of str or path-like
        Local paths, folders or globs; ``s3://bucket/key`` or ``s3://bucket/prefix/``;
        ``@listfile``. Sources planned by an earlier run of ``out`` are kept (and resumed).
    out : str or path-like
        Catalogue root: local folder or ``s3://bucket/prefix``. ``Catalogue.open(out)`` opens
        the result.
    store : str or path-like, optional
        Tile store URI (default: ``<out>/tiles``).
    scheduler : str, optional
        Address of a Dask scheduler (``tcp://host:8786``); default: a ``LocalCluster`` with real
        worker processes.
    client : distributed.Client, optional
        An existing client (takes precedence over ``scheduler``).
    model, weights : str, optional
        Embedding model name (default: ``tf_efficientnet_lite0``) and a local weights file.
    zooms, stride, unit_size : optional
        Tiling parameters (binning factors; step between tiles in tile pixels; tiles per work
        unit); default: :class:`tiling.TilingConfig`'s. Ignored when ``tiling_config`` is given.
    tiling_config : tiling.TilingConfig, optional
    grid_config : grid.GridConfig, optional
    signing_key : optional
        Operator's Ed25519 private key for the catalogue's signed checkpoint.
    workers : int, optional
        Worker processes of the local cluster (default: the grid's default).
    mast : sequence of str
        MAST dataset ids to add (``s3://stpubdata/hst/public/...``, read anonymously).
    suffix : str
        Product suffix of the MAST datasets (``drz``, ``drc``, ...).
    endpoint_url : str, optional
        S3 endpoint for every ``s3://`` URI of the run (default: ``AWS_ENDPOINT_URL`` or AWS).
    retry_failed : bool
        Try again the sources that failed in earlier runs (otherwise they are skipped).
    progress : bool or callable
        True: progress bars per stage (on stderr) and the dashboard link; False: nothing; a
        callable ``progress(stage, done, total, note)`` (:data:`ProgressCallback`): every step
        is reported to it and nothing is drawn or printed.

    Returns
    -------
    RunSummary
        Sources done / skipped / failed with reasons, tiles, units (computed vs. reused), time per
        stage, catalogue version and Merkle root (hex).

    Raises
    ------
    SourceSpecError
        A malformed MAST id, suffix or list file (before any work starts).
    RunStateError
        ``out`` holds a run with other parameters (tile store, model, weights, tiling).
    """
    with s3_endpoint(endpoint_url), drawn(progress) as callback:
        return _run(
            sources,
            out,
            store=store,
            scheduler=scheduler,
            client=client,
            model=model,
            weights=weights,
            tiling_config=_tiling_config(zooms, stride, unit_size, tiling_config),
            grid_config=grid_config,
            signing_key=signing_key,
            workers=workers,
            mast=mast,
            suffix=suffix,
            endpoint_url=endpoint_url,
            retry_failed=retry_failed,
            progress=callback,
        )


def _run(
    sources,
    out,
    *,
    store,
    scheduler,
    client,
    model,
    weights,
    tiling_config,
    grid_config,
    signing_key,
    workers,
    mast,
    suffix,
    endpoint_url,
    retry_failed,
    progress,
) -> RunSummary:
    from embeddings import load_model
    from tiling import TileStore, TilingConfig

    started = now()
    t_start = time.perf_counter()
    specs, rejected = resolve_sources(
        [os.fspath(s) for s in sources], mast=mast, suffix=suffix, endpoint_url=endpoint_url
    )
    out_uri = norm_uri(out)
    out_store = open_object_store(out_uri)
    state = RunState(out_store)
    # what is not given is taken from the recorded plan, so re-running resumes as it was started
    recorded = state.read_plan()
    if recorded is not None:
        store = store if store is not None else recorded.store
        if model is None and weights is None:
            model, weights = recorded.model, recorded.weights
        if tiling_config is None:
            tiling_config = TilingConfig.from_dict(recorded.tiling)
    tiling_config = tiling_config or TilingConfig()
    store_uri = tile_store_uri(out_uri, store)

    emb_model = load_model(model, weights)
    plan = RunPlan(
        store=store_uri,
        model=emb_model.name,
        weights=None if weights is None else os.fspath(weights),
        tiling=tiling_config.to_dict(),
        tiling_digest=tiling_config.digest(),
        sources=[s.uri for s in specs],
    )
    plan, _new = state.reconcile(plan)
    attempt = state.next_attempt()
    state.write_attempt(attempt, {"attempt": attempt, "started": started, "finished": None})

    summary = RunSummary(
        catalogue=out_uri,
        tile_store=store_uri,
        model=emb_model.name,
        model_digest=emb_model.digest,
        weights_sha256=emb_model.weights_sha256,
        attempt=attempt,
    )

    stages = Stages(progress)
    # ---------------------------------------------------------------- tiling
    t0 = time.perf_counter()
    tile_store = TileStore.open_or_create(store_uri, tiling_config)
    with stages.stage("tiling", len(plan.sources)) as advance:
        outcomes = tile_stage(tile_store, state, plan.sources, retry_failed, stages, advance)
    summary.sources.extend(outcomes[uri] for uri in plan.sources)
    for rej in rejected:
        summary.sources.append(SourceOutcome(rej.given, "failed", rej.reason))
    summary.stage_seconds["tiling"] = time.perf_counter() - t0
    summary.tiles_added = sum(s.tiles for s in summary.done)

    # ---------------------------------------------------------------- embedding
    embedding_store = embed_stage(
        summary,
        tile_store,
        emb_model,
        model,
        weights,
        lambda n, reused, todo: (
            f"embedding: {n} units, {reused} already done (not recomputed), {todo} to run"
        ),
        stages=stages,
        scheduler=scheduler,
        client=client,
        grid_config=grid_config,
        workers=workers,
    )

    # ---------------------------------------------------------------- catalogue
    t0 = time.perf_counter()
    if summary.tiles and (summary.units_reused + summary.units_computed):
        from catalog import Catalogue

        with stages.stage("catalogue", 1) as advance:
            cat = Catalogue.build(out_store, tile_store, embedding_store, signing_key)
            advance()
        fill_catalogue(summary, cat.manifest)
    summary.stage_seconds["catalogue"] = time.perf_counter() - t0

    summary.stage_seconds["total"] = time.perf_counter() - t_start
    state.write_attempt(
        attempt,
        {
            "attempt": attempt,
            "started": started,
            "finished": now(),
            "stage_seconds": summary.stage_seconds,
            "units_computed": summary.units_computed,
            "units_reused": summary.units_reused,
            "tiles_added": summary.tiles_added,
            "merkle_root": summary.merkle_root,
        },
    )
    state.write_summary(summary.to_dict())
    return summary
