"""Search quality on real Hubble mosaics: the base model against a model tuned in this run.

Mosaics (real pixels; training and scoring sets are disjoint and printed):

- training: the demo's sample mosaics (:func:`pipeline.samples.sample_paths`: mpdaf's WFPC2
  Abell 478 cutout and Hubble Deep Field South), scikit-image's Hubble Deep Field image (written
  as FITS with a made-up WCS) and synthetic crowded star fields (:mod:`benchmarks._starfields`),
  tiled by the project's :class:`tiling.TileStore` (zoom 1, stride 56 px);
- scoring: the ACS/HRC 47 Tuc drizzled mosaic, the ACS/WFC COSMOS cutout and the WFC3/IR
  Abell 2744 cutout of ``../shared/data/hst/`` (none of them, and no other cut of their sky,
  is seen in training).

The tuned model comes from ``hubcat tune``'s path (:func:`pipeline.commands.tune.tune_model`):
:func:`grid.run_training` on a local cluster of 2 worker processes runs rounds of
:func:`embeddings.local_steps` on shards of the training store, checks the deltas
(:func:`embeddings.check_delta`) and averages them (FedAvg, outer learning rate 1); the model is
written with :func:`embeddings.save_tuned_model` and loaded back with
:func:`embeddings.load_model`. The recipe is ``HUBCAT_BENCH_RECIPE`` (default ``sky-pairs``:
background-centred codes of position pairs at 16 fixed offsets beside the frozen base vector,
see :func:`embeddings.named_recipe`; ``default`` blends the base model's vector in with
``base_weight`` = :data:`BASE_WEIGHT`; ``same-sky``: 8,192 background-centred codes). The same
network with its head as initialised (no step) is scored beside it, so the run shows what
training adds to the architecture. ``HUBCAT_BENCH_TUNED=DIR[,DIR...]`` scores existing tuned
models instead of tuning.

Figures, for the base model (``tf_efficientnet_lite0``, ImageNet weights, D4-pooled) and each
tuned model, all measured in the same run on the same tiles:

- shift-retrieval@1: grid tiles at half-tile stride against the same sky shifted by a quarter
  tile in x and y (footprint tiles only: at least half valid pixels); a shifted tile scores when
  its nearest grid tile (same mosaic, cosine) is one of the grid tiles it overlaps most
  (:func:`benchmarks.search.shift_tiles`, the same tiles for every model);
- object retrieval@10: real galaxies cut from the Hubble Deep Field image and synthetic arcs,
  rings, edge-on discs, mergers and trails (:mod:`benchmarks._objects`), 12 of each kind,
  injected at random grid-tile positions of the scoring mosaics; for each injected tile, the
  share of its 10 nearest other tiles (grid tiles and injected tiles) holding the same kind.
  An injected tile is a grid tile with an object added, so the grid tile it was made from and
  the grid tiles overlapping that one show its own sky: a model that finds the same sky however
  it is cut ranks them first, and counting them as misses would score one purpose of the
  catalogue against the other. They are left out of that tile's ranking (neither hits nor
  misses: the "junk" of the revisited Oxford/Paris retrieval protocol, :func:`own_sky`). The
  figure with every grid tile ranked, own sky as misses, is printed beside it
  ("own sky ranked");
- anomaly precision: 2 injected tiles of each kind among all grid tiles of the scoring mosaics;
  the share of injected tiles among the top N (N = number injected) of the catalogue's anomaly
  ranking (:meth:`catalog.Catalogue.anomalies`: 1 - cosine to the k-th nearest other tile, k =
  ``CatalogConfig().anomaly_k``), computed exactly on the same vectors.

The tune runs ``HUBCAT_BENCH_TUNE_ROUNDS`` rounds (default 2) of ``HUBCAT_BENCH_TUNE_STEPS``
local steps (default 30) per shard: about 5 minutes for the ``sky-pairs`` recipe on two cores,
8 to 9 minutes for the whole benchmark. ``--quick`` tunes one short round (a smoke run, not the
quality figure).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import Figure, cpu_threads

STAGE = "quality"
#: Scoring mosaics (file in ../shared/data/hst, HDU).
SCORE_FILES: tuple[tuple[str, str | int], ...] = (
    ("drizzle_reference_square_image_acs-hrc_f606w_ngc104.fits", "SCI"),
    ("galsim_cosmos_147246.0_150.416558_1.998697_masknoise.fits", 0),
    ("abell_2744_cd_galaxy_f105w.fits.gz", 0),
)
PER_KIND = 12
ANOMALY_PER_KIND = 2
K = 10
#: Synthetic crowded star fields added to the training sky, and their side in pixels.
STAR_FIELDS = 4
STAR_FIELD_SIZE = 512
#: Share of the base model's cosine in the tuned model's (fixed, not fitted to the scoring set).
BASE_WEIGHT = 0.5


def _recipe(quick: bool):
    """The recipe tuned here: ``HUBCAT_BENCH_RECIPE`` (default ``sky-pairs``), with the
    blend of :data:`BASE_WEIGHT` for the ``default`` recipe."""
    from dataclasses import replace

    from embeddings import named_recipe

    name = os.environ.get("HUBCAT_BENCH_RECIPE", "sky-pairs")
    steps = 20 if quick else int(os.environ.get("HUBCAT_BENCH_TUNE_STEPS", "30"))
    recipe = replace(named_recipe(name), steps_per_unit=steps)
    if name == "default":
        recipe = replace(recipe, batch_size=32, base_weight=BASE_WEIGHT)
    if quick:
        recipe = replace(recipe, views_per_tile=2)
    return name, recipe


def untrained(base, recipe, out: Path) -> Path:
    """The recipe's network with its head as initialised, before any step (a reference: what
    the architecture gives before training moves it)."""
    from embeddings import save_tuned_model, trainable_state

    record = {"tiles_merkle_root": "0" * 64, "objective": recipe.objective, "seed": 0, "steps": 0}
    return save_tuned_model(out, base, trainable_state(base, recipe), recipe, record)


def hdf_image() -> np.ndarray:
    """scikit-image's Hubble Deep Field JPEG as one grey band in [0, 1] (float32)."""
    import skimage.data

    return skimage.data.hubble_deep_field().astype(np.float32).mean(axis=-1) / 255.0


def write_hdf_fits(path: Path) -> None:
    """Write scikit-image's Hubble Deep Field JPEG (grey) as a FITS image with a TAN WCS.

    The JPEG has no WCS; the one written (0.04"/px at the field's position, north up) only lets
    the project's tiling take it like a mosaic.
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    grey = hdf_image()
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [grey.shape[1] / 2 + 0.5, grey.shape[0] / 2 + 0.5]
    wcs.wcs.crval = [189.2283, 62.2161]
    wcs.wcs.cdelt = [-0.04 / 3600, 0.04 / 3600]
    fits.PrimaryHDU(grey[::-1], header=wcs.to_header()).writeto(path, overwrite=True)


def training_store(folder: Path, star_fields: int = STAR_FIELDS) -> tuple[object, list[str]]:
    """The training tile store: the demo's sample mosaics, the Hubble Deep Field JPEG and
    ``star_fields`` synthetic crowded star fields (:mod:`benchmarks._starfields`), tiled by
    the project's :class:`tiling.TileStore` (zoom 1, stride 56 px)."""
    from benchmarks._starfields import write_star_field
    from pipeline.samples import sample_paths
    from tiling import TileStore, TilingConfig

    sources = list(sample_paths())
    hdf = folder / "skimage-hubble-deep-field.fits"
    write_hdf_fits(hdf)
    sources.append(hdf)
    for k in range(star_fields):
        path = folder / f"synthetic-star-field-{k}.fits"
        write_star_field(path, seed=k, size=STAR_FIELD_SIZE)
        sources.append(path)
    config = TilingConfig(zooms=(1,), stride=56, measure_sources=False)
    store = TileStore.open_or_create(folder / "train-tiles", config)
    for path in sources:
        store.add_mosaic(path)
    return store, [p.name for p in sources]


def tune(base, store, recipe, rounds: int, out: Path, shards: int = 2):
    """Tune ``recipe`` on ``store`` through the project's tune path (``hubcat tune``'s
    :func:`pipeline.commands.tune.tune_model`: :func:`grid.run_training` on a local cluster of
    2 worker processes, one replica per unit, FedAvg of the checked deltas)."""
    from grid import GridConfig, TrainingConfig
    from pipeline.commands.tune import tune_model

    report, path = tune_model(
        store,
        out,
        recipe,
        base_model=base,
        config=GridConfig(n_workers=2, threads_per_worker=1),
        training=TrainingConfig(rounds=rounds, shards=shards),
    )
    if path is None:
        msg = f"the tune accepted no training unit: {report}"
        raise RuntimeError(msg)
    return path, report


def score_mosaics(hst: Path):
    from benchmarks.search import shift_tiles

    present = [(hst / f, h) for f, h in SCORE_FILES if (hst / f).is_file()]
    return present, [shift_tiles(path, hdu) for path, hdu in present]


def injected_sets(mosaics, seed: int = 0):
    """(grid, objects, anomalies): all grid tiles, then ``(tiles, kinds, sources)`` for object
    retrieval and for anomaly precision; ``sources[i]`` is the index of the grid tile that
    injected tile ``i`` was made from."""
    from benchmarks._objects import KINDS, galaxy_stamps, inject, make_object

    stamps = galaxy_stamps(hdf_image())
    rng = np.random.default_rng(seed)
    grid = np.concatenate([m[0] for m in mosaics])

    def draw(per_kind: int) -> tuple[np.ndarray, list[str], np.ndarray]:
        tiles, kinds, sources = [], [], []
        for kind in KINDS:
            for _ in range(per_kind):
                source = int(rng.integers(len(grid)))
                tiles.append(inject(grid[source], make_object(kind, rng, stamps)))
                kinds.append(kind)
                sources.append(source)
        return np.array(tiles, dtype=np.float32), kinds, np.array(sources)

    return grid, draw(PER_KIND), draw(ANOMALY_PER_KIND)


def own_sky(mosaics, sources: np.ndarray, size: int = 224) -> list[np.ndarray]:
    """For each injected tile, the grid tiles showing its own sky: the grid tile it was made
    from and every grid tile of the same mosaic overlapping that one (its 3 x 3 neighbourhood
    at half-tile stride)."""
    mosaic, xy = [], []
    for m, (_grid, _shifted, origins, _best) in enumerate(mosaics):
        mosaic += [m] * len(origins)
        xy += list(origins)
    mosaic_ids, xy = np.array(mosaic), np.array(xy).reshape(-1, 2)
    out = []
    for s in sources:
        near = np.all(np.abs(xy - xy[s]) < size, axis=1) & (mosaic_ids == mosaic_ids[s])
        out.append(np.flatnonzero(near))
    return out


def shift_score(model, mosaics, grid_vecs: np.ndarray) -> tuple[float, str]:
    """shift-retrieval@1 over all scoring mosaics, and the hits per mosaic.

    ``grid_vecs`` are the vectors of all mosaics' grid tiles, in order (embedded once and
    shared with the object and anomaly figures)."""
    from benchmarks.search import shift_hits
    from embeddings import embed_tiles

    hits, counts, start = [], [], 0
    for grid, shifted, _origins, best in mosaics:
        g = grid_vecs[start : start + len(grid)]
        start += len(grid)
        hits.append(shift_hits(g, embed_tiles(model, shifted), best) if len(shifted) else 0)
        counts.append(len(shifted))
    detail = " ".join(f"{h}/{c}" for h, c in zip(hits, counts, strict=True))
    return sum(hits) / max(1, sum(counts)), detail


def object_retrieval(
    grid_vecs: np.ndarray,
    obj_vecs: np.ndarray,
    kinds: list[str],
    exclude: list[np.ndarray] | None = None,
) -> float:
    """Mean share of same-kind tiles among each injected tile's K nearest other tiles.

    ``exclude[i]`` are grid tiles that neither count nor take a place among injected tile
    ``i``'s K nearest (its own sky, :func:`own_sky`); ``None`` ranks every tile.
    """
    corpus = np.concatenate([grid_vecs, obj_vecs])
    labels = np.array([""] * len(grid_vecs) + list(kinds))
    sims = obj_vecs @ corpus.T
    own = np.arange(len(obj_vecs)) + len(grid_vecs)
    sims[np.arange(len(obj_vecs)), own] = -np.inf
    for i, junk in enumerate(exclude or []):
        sims[i, junk] = -np.inf
    top = np.argsort(-sims, axis=1)[:, :K]
    return float(np.mean(labels[top] == np.array(kinds)[:, None]))


def anomaly_precision(grid_vecs: np.ndarray, obj_vecs: np.ndarray) -> float:
    """Share of injected tiles among the top N of the anomaly score (N = injected count)."""
    from catalog import CatalogConfig

    k = CatalogConfig().anomaly_k
    x = np.concatenate([grid_vecs, obj_vecs]).astype(np.float64)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    kth = -np.sort(-sims, axis=1)[:, k - 1]
    scores = 1.0 - kth
    n = len(obj_vecs)
    top = np.argsort(-scores, kind="stable")[:n]
    return float(np.mean(top >= len(grid_vecs)))


def evaluate(model, mosaics, grid, objects, anomalies) -> dict[str, float]:
    from embeddings import embed_tiles

    t0 = time.perf_counter()
    g = embed_tiles(model, grid)
    shift, detail = shift_score(model, mosaics, g)
    o = embed_tiles(model, objects[0])
    a = embed_tiles(model, anomalies[0])
    return {
        "shift": shift,
        "shift_detail": detail,
        "objects": object_retrieval(g, o, objects[1], own_sky(mosaics, objects[2])),
        "objects_own_sky": object_retrieval(g, o, objects[1]),
        "anomaly": anomaly_precision(g, a),
        "seconds": time.perf_counter() - t0,
    }


def run(quick: bool) -> list[Figure]:
    import torch

    from benchmarks.search import _hst_dir
    from embeddings import EmbedConfig, load_base_net, load_model

    hst = _hst_dir()
    present, mosaics = score_mosaics(hst)
    if not present:
        return [Figure(STAGE, "shift-retrieval@1", float("nan"), "", note=f"no HST files at {hst}")]
    threads = cpu_threads()
    torch.set_num_threads(threads)
    config = EmbedConfig(threads=threads)
    grid, objects, anomalies = injected_sets(mosaics)
    base = load_model(config=config)
    results = {"base": evaluate(base, mosaics, grid, objects, anomalies)}
    tuned_dirs = [d for d in os.environ.get("HUBCAT_BENCH_TUNED", "").split(",") if d]
    notes = {}
    with tempfile.TemporaryDirectory(prefix="hubcat-quality-") as tmp:
        if not tuned_dirs:
            store, train_names = training_store(Path(tmp))
            n_tiles = sum(len(u.tile_ids) for u in store.units())
            recipe_name, recipe = _recipe(quick)
            rounds = 1 if quick else int(os.environ.get("HUBCAT_BENCH_TUNE_ROUNDS", "2"))
            out = Path(os.environ.get("HUBCAT_BENCH_TUNED_OUT", "") or Path(tmp) / "tuned")
            t0 = time.perf_counter()
            train_base = load_base_net(recipe.base, EmbedConfig(runtime="torch"))
            path, report = tune(train_base, store, recipe, rounds, out)
            start = untrained(train_base, recipe, Path(tmp) / "untrained")
            tuned_dirs = [str(start), str(path)]
            notes[tuned_dirs[0]] = f"recipe {recipe_name!r}, head as initialised: no step"
            notes[tuned_dirs[1]] = (
                f"recipe {recipe_name!r} tuned by hubcat tune's tune_model on a 2-worker local "
                f"cluster in {time.perf_counter() - t0:.0f} s: {report.rounds_done} round(s) x "
                f"{report.shards} shards x {recipe.steps_per_unit} steps on {n_tiles} tiles of "
                f"{', '.join(train_names)}"
            )
        for d in tuned_dirs:
            tuned = load_model(d, config=config)
            results[tuned.name] = evaluate(tuned, mosaics, grid, objects, anomalies)
            notes[tuned.name] = notes.pop(d, f"scored from {d}")
    scored = ", ".join(p.name for p, _ in present)
    n_shift = sum(len(m[1]) for m in mosaics)
    b = results["base"]
    figures = [
        Figure(
            STAGE,
            "shift-retrieval@1 base",
            b["shift"],
            "",
            note=f"scoring mosaics: {scored}; hits per mosaic {b['shift_detail']}",
        ),
        Figure(
            STAGE,
            "object retrieval@10 base",
            b["objects"],
            "",
            note="each injected tile's own sky (its source grid tile and the grid tiles "
            "overlapping it) neither counts nor takes a place",
        ),
        Figure(
            STAGE,
            "object retrieval@10 own sky ranked, base",
            b["objects_own_sky"],
            "",
            note="every grid tile ranked, the injected tile's own sky included (as a miss)",
        ),
        Figure(STAGE, "anomaly precision base", b["anomaly"], ""),
    ]
    for name, r in results.items():
        if name == "base":
            continue
        figures += [
            Figure(
                STAGE,
                f"shift-retrieval@1 {name}",
                r["shift"],
                "",
                "base",
                b["shift"],
                goal=">= 0.9",
                note=(
                    f"{n_shift} shifted tiles, hits per mosaic {r['shift_detail']}; "
                    f"{notes.get(name, '')}"
                ),
            ),
            Figure(
                STAGE,
                f"object retrieval@10 {name}",
                r["objects"],
                "",
                "base",
                b["objects"],
                goal=">= base",
                note=f"{len(objects[1])} injected tiles among {len(grid)} grid tiles",
            ),
            Figure(
                STAGE,
                f"object retrieval@10 own sky ranked, {name}",
                r["objects_own_sky"],
                "",
                "base",
                b["objects_own_sky"],
            ),
            Figure(
                STAGE,
                f"anomaly precision {name}",
                r["anomaly"],
                "",
                "base",
                b["anomaly"],
                note=f"{len(anomalies[1])} injected tiles among {len(grid)} grid tiles",
            ),
        ]
    return figures
