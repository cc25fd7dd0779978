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

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from hubcat.errors import HubcatError
from hubcat.storage import join_uri, open_object_store
from pipeline._sources import resolve_sources
from pipeline._state import RunPlan, RunState, SourceRecord, now
from pipeline._summary import RunSummary, SourceOutcome

__all__ = [
    "RunSummary",
    "SourceOutcome",
    "model_versions",
    "open_run_state",
    "reprocess_catalogue",
    "run_pipeline",
    "tile_store_uri",
]

log = logging.getLogger(__name__)

#: Where the tile store goes when no ``store`` is given: beside the catalogue's files.
DEFAULT_STORE = "tiles"


def tile_store_uri(out: str | os.PathLike[str], store: str | os.PathLike[str] | None = None) -> str:
    """URI of the tile store of the catalogue ``out`` (``<out>/tiles`` unless ``store`` given)."""
    if store is not None:
        return _norm(store)
    return join_uri(_norm(out), DEFAULT_STORE)


def _norm(uri: str | os.PathLike[str]) -> str:
    text = os.fspath(uri)
    if text.startswith("s3://"):
        return text.rstrip("/")
    if text.startswith("file://"):
        text = text[len("file://") :]
    return str(Path(text).expanduser().absolute())


def open_run_state(out: str | os.PathLike[str]) -> RunState:
    """The run record of catalogue ``out`` (``<out>/run/``)."""
    return RunState(open_object_store(_norm(out)))


@contextlib.contextmanager
def _endpoint(endpoint_url: str | None) -> Iterator[None]:
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
def _drawn(progress: bool | ProgressCallback) -> Iterator[ProgressCallback | None]:
    """The callback a run reports to: the caller's, one that draws bars (``True``), or none."""
    if callable(progress):
        yield progress
    elif progress:
        from pipeline.commands._progress import StageBars

        with StageBars() as bars:
            yield bars
    else:
        yield None


class _Stages:
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
    with _endpoint(endpoint_url), _drawn(progress) as callback:
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
    out_uri = _norm(out)
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

    stages = _Stages(progress)
    # ---------------------------------------------------------------- tiling
    t0 = time.perf_counter()
    tile_store = TileStore.open_or_create(store_uri, tiling_config)
    with stages.stage("tiling", len(plan.sources)) as advance:
        outcomes = _tile_stage(tile_store, state, plan.sources, retry_failed, stages, advance)
    summary.sources.extend(outcomes[uri] for uri in plan.sources)
    for rej in rejected:
        summary.sources.append(SourceOutcome(rej.given, "failed", rej.reason))
    summary.stage_seconds["tiling"] = time.perf_counter() - t0
    summary.tiles_added = sum(s.tiles for s in summary.done)

    # ---------------------------------------------------------------- embedding
    embedding_store = _embed_stage(
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
        _fill_catalogue(summary, cat.manifest)
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


def _model_slug(name: str, digest: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    return f"{safe}-{digest[:12]}"


def model_versions(catalogue: str | os.PathLike[str]) -> list[dict]:
    """The model versions of a catalogue: the first model's at its root, later ones (made by
    :func:`reprocess_catalogue`) under ``models/<name>-<digest>/``. Each entry: ``version``,
    ``model``, ``model_digest``, ``weights_sha256``, ``catalogue`` (URI), ``created``,
    ``merkle_root``."""
    import json

    from hubcat.errors import StoreNotFoundError

    state = open_run_state(catalogue)
    try:
        return json.loads(state.root.get("models.json"))
    except StoreNotFoundError:
        pass
    try:
        manifest = json.loads(state.catalogue.get("manifest.json"))
    except StoreNotFoundError:
        return []
    prov = manifest.get("provenance") or {}
    model = manifest.get("model", {})
    return [
        {
            "version": 1,
            "model": model.get("name"),
            "model_digest": model.get("digest"),
            "weights_sha256": model.get("weights_sha256"),
            "catalogue": state.catalogue.uri,
            "created": manifest.get("created"),
            "merkle_root": prov.get("root") if isinstance(prov, dict) else None,
        }
    ]


def reprocess_catalogue(
    catalogue: str | os.PathLike[str],
    model: str,
    weights: str | os.PathLike[str] | None = None,
    *,
    scheduler: str | None = None,
    client=None,
    grid_config=None,
    workers: int | None = None,
    signing_key=None,
    endpoint_url: str | None = None,
    progress: bool | ProgressCallback = True,
) -> RunSummary:
    """Re-embed a catalogue's tiles with another model and write a new model version.

    The tiles are not re-cut: the tile store of the catalogue is embedded again (on the grid,
    resumable like a run), and the new model's catalogue is written under
    ``<catalogue>/models/<name>-<digest12>/``, with its own index and provenance. The earlier
    version is left untouched and still opens; :func:`model_versions` lists them all.

    Parameters
    ----------
    catalogue : str or path-like
        The catalogue made by :func:`run_pipeline` (local folder or ``s3://`` prefix).
    model, weights : str
        The new model's name and, optionally, a local weights file.
    scheduler, client, grid_config, workers, signing_key, endpoint_url, progress
        As for :func:`run_pipeline`.

    Returns
    -------
    RunSummary
        ``catalogue`` is the new version's URI; units computed / reused as for a run.

    Raises
    ------
    RunStateError
        No catalogue at ``catalogue``, or it already holds this exact model.
    """
    with _endpoint(endpoint_url), _drawn(progress) as callback:
        return _reprocess(
            catalogue,
            model,
            weights,
            scheduler=scheduler,
            client=client,
            grid_config=grid_config,
            workers=workers,
            signing_key=signing_key,
            progress=callback,
        )


def _reprocess(
    catalogue, model, weights, *, scheduler, client, grid_config, workers, signing_key, progress
):
    import json

    from catalog import Catalogue
    from embeddings import load_model
    from pipeline.errors import RunStateError
    from tiling import TileStore

    t_start = time.perf_counter()
    state = open_run_state(catalogue)
    versions = model_versions(catalogue)
    if not versions:
        msg = f"no catalogue at {state.catalogue.uri}; make one with `hubcat run SOURCES --out {catalogue}`"
        raise RunStateError(msg)
    plan = state.read_plan()
    store_uri = (
        plan.store if plan is not None else Catalogue.open(state.catalogue).manifest["tile_store"]
    )
    new_model = load_model(model, weights)
    for v in versions:
        if v["model_digest"] == new_model.digest:
            msg = (
                f"catalogue version {v['version']} ({v['catalogue']}) already holds model "
                f"{new_model.name} with these weights (digest {new_model.digest[:12]}); nothing to do"
            )
            raise RunStateError(msg)
    out_uri = join_uri(
        state.catalogue.uri, f"models/{_model_slug(new_model.name, new_model.digest)}"
    )
    summary = RunSummary(
        catalogue=out_uri,
        tile_store=store_uri,
        model=new_model.name,
        model_digest=new_model.digest,
        weights_sha256=new_model.weights_sha256,
    )
    stages = _Stages(progress)
    tile_store = TileStore.open(store_uri)
    summary.stage_seconds["tiling"] = 0.0  # tiles are not re-cut

    embedding_store = _embed_stage(
        summary,
        tile_store,
        new_model,
        model,
        weights,
        lambda n, reused, todo: (
            f"reprocess with {new_model.name}: {n} units of {tile_store.uri}, "
            f"{reused} already embedded with it"
        ),
        stages=stages,
        scheduler=scheduler,
        client=client,
        grid_config=grid_config,
        workers=workers,
    )

    t0 = time.perf_counter()
    if summary.units_reused + summary.units_computed:
        with stages.stage("catalogue", 1) as advance:
            cat = Catalogue.build(out_uri, tile_store, embedding_store, signing_key)
            advance()
        _fill_catalogue(summary, cat.manifest)
        versions.append(
            {
                "version": len(versions) + 1,
                "model": new_model.name,
                "model_digest": new_model.digest,
                "weights_sha256": new_model.weights_sha256,
                "weights": None if weights is None else os.fspath(weights),
                "catalogue": out_uri,
                "created": now(),
                "merkle_root": summary.merkle_root,
            }
        )
        state.root.put("models.json", (json.dumps(versions, indent=2) + "\n").encode())
        summary.catalogue_version = len(versions)
    summary.stage_seconds["catalogue"] = time.perf_counter() - t0
    summary.stage_seconds["total"] = time.perf_counter() - t_start
    return summary


def _tile_stage(tile_store, state: RunState, uris, retry_failed: bool, stages, advance):
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


def _unit_reason(tile_store, emb_model, unit_key: str) -> str:
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


def _embed_stage(
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
        grid_options = {**grid_options, "callback": _unit_events(stages, len(todo))}
        report = _embed(tile_store, model, weights, **grid_options)
        # A local cluster is gone when the stage ends: only a grid scheduler's dashboard (which
        # outlives the run) belongs in the summary.
        external = grid_options.get("client") is not None or grid_options.get("scheduler")
        summary.dashboard = (report.dashboard or None) if external else None
        done_now = {u.unit_key for u in todo if embedding_store.has(u.unit_key)}
        summary.units_computed = len(done_now)
        failed = [u for u in todo if u.unit_key not in done_now]
        summary.units_failed = len(failed)
        summary.unit_failures = [
            {"unit_key": u.unit_key, "reason": _unit_reason(tile_store, emb_model, u.unit_key)}
            for u in failed
        ]
    summary.stage_seconds["embedding"] = time.perf_counter() - t0
    return embedding_store


def _unit_events(stages: _Stages, total: int) -> Callable[[str, str], None]:
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


def _embed(
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


def _fill_catalogue(summary: RunSummary, manifest: dict) -> None:
    prov = manifest.get("provenance") or {}
    summary.merkle_root = prov.get("root") if isinstance(prov, dict) else None
    summary.catalogue_version = manifest.get("version")
    summary.catalogue_tiles = int(manifest.get("counts", {}).get("tiles", 0))
