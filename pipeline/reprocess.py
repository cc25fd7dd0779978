"""Reprocess a catalogue with another model: embed its tiles again and add a model version.

>>> from pipeline.reprocess import reprocess_catalogue
>>> summary = reprocess_catalogue("catalogue/", "tuned-model/")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time

from hubcat.storage import join_uri
from pipeline._stages import (
    ProgressCallback,
    Stages,
    drawn,
    embed_stage,
    fill_catalogue,
    s3_endpoint,
)
from pipeline._state import now
from pipeline._summary import RunSummary
from pipeline.run import open_run_state

__all__ = ["model_versions", "reprocess_catalogue"]


def _model_slug(name: str, digest: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    return f"{safe}-{digest[:12]}"


def model_versions(catalogue: str | os.PathLike[str]) -> list[dict]:
    """The model versions of a catalogue.

    The first model's catalogue is at its root; later ones (made by :func:`reprocess_catalogue`)
    under ``models/<name>-<digest>/``.

    Parameters
    ----------
    catalogue : str or path-like
        The catalogue's folder or ``s3://`` URI (the run's output).

    Returns
    -------
    list of dict
        One entry per version, oldest first: ``version``, ``model``, ``model_digest``,
        ``weights_sha256``, ``catalogue`` (URI), ``created``, ``merkle_root`` (later versions
        also ``weights``, the weights file given, or None). Read from
        ``models.json``, else built from the root catalogue's manifest; empty when there is
        neither.
    """

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
    with s3_endpoint(endpoint_url), drawn(progress) as callback:
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
    stages = Stages(progress)
    tile_store = TileStore.open(store_uri)
    summary.stage_seconds["tiling"] = 0.0  # tiles are not re-cut

    embedding_store = embed_stage(
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
        fill_catalogue(summary, cat.manifest)
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
