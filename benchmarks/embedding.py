"""Embedding stage: runtimes and precisions side by side, accuracy on real tiles, stage vs loop.

Figures (all against baselines measured in this run, same model, threads and batch size):

- ``<runtime> <precision> images/s``: the bare inference loop of each runtime (median of >= 3
  rounds) over the same normalised augmented images, against torch fp32 channels-last (the
  embed stage's runtime before OpenVINO became the default). The note gives the pooled D4
  vectors' mean/min cosine and recall@10 against torch fp32 on real HST tiles
  (``../shared/data/hst/``), and the stage-to-bare-loop ratio of :func:`embeddings.embed_tiles`.
  Precisions this CPU cannot run natively are reported as skipped, with the reason.
- ``honest 1-cos <class>``: the largest ``1 - cos`` between the pooled vectors of the same real
  tiles computed with 1 and 2 threads and two batch sizes: the noise that
  :data:`embeddings.CLASS_MIN_COSINE` is calibrated on.
- ``embed in-process tiles/s``: ``hubcat embed --in-process`` on a real tile store (reading
  tiles, embedding, writing vectors), OpenVINO against torch.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import Figure, cpu_threads

STAGE = "embedding"
CALIBRATION_TILES = 32  # int8 calibration: real tiles other than the evaluated ones
HST = ("drizzle_reference_square_image_acs-hrc_f606w_ngc104.fits", 56)  # file, stride (px)
OTHERS = (
    "galsim_cosmos_147246.0_150.416558_1.998697_masknoise.fits",
    "mpdaf_HST-HDFS.fits",
    "abell_2744_cd_galaxy_f105w.fits.gz",
)


def _hst_dir() -> Path:
    here = Path(__file__).resolve().parents[1]
    return Path(os.environ.get("HUBCAT_TEST_DATA", here.parent / "shared" / "data" / "hst"))


def real_tiles(workdir: Path, n: int, quick: bool = False) -> tuple[np.ndarray, str]:
    """Up to ``n`` stretched 224x224 tiles cut by :class:`tiling.TileStore` from real HST files.

    The 47 Tuc ACS mosaic at a 56 px stride, plus three other fields (``quick``: those three at
    a 112 px stride); falls back to seeded synthetic star fields (and says so) when the files are
    absent.
    """
    from tiling import TileStore, TilingConfig

    hst = _hst_dir()
    name, stride = HST
    if not (hst / name).is_file():
        return _synthetic(n), "synthetic star fields (real HST files not found)"
    files = OTHERS if quick else (name, *OTHERS)
    stride = 112 if quick else stride
    config = TilingConfig(zooms=(1,), stride=stride, measure_sources=False, unit_size=64)
    store = TileStore.create(workdir / "real-tiles", config)
    for f in files:
        if (hst / f).is_file():
            store.add_mosaic(hst / f)
    tiles = np.concatenate([store.read_unit(u.unit_key)[1] for u in store.units()])
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(tiles), size=min(n, len(tiles)), replace=False))
    fields = "COSMOS, HDF-S, Abell 2744" if quick else "ACS 47 Tuc, COSMOS, HDF-S, Abell 2744"
    return tiles[pick], f"{len(pick)} real HST tiles ({fields})"


def _synthetic(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224]
    out = np.empty((n, 224, 224), dtype=np.float32)
    for i in range(n):
        img = rng.normal(0.05, 0.02, size=(224, 224))
        for _ in range(10):
            x, y = rng.uniform(0, 224, size=2)
            s = rng.uniform(1, 10)
            img += rng.uniform(0.1, 0.9) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s))
        out[i] = np.clip(img, 0, 1)
    return out


def recall_at_k(reference: np.ndarray, other: np.ndarray, k: int = 10) -> float:
    """Mean overlap of each tile's k nearest neighbours (inner product, self excluded)."""
    k = min(k, len(reference) - 1)

    def knn(v: np.ndarray) -> np.ndarray:
        sim = v @ v.T
        np.fill_diagonal(sim, -np.inf)
        return np.argsort(-sim, axis=1, kind="stable")[:, :k]

    a, b = knn(reference), knn(other)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b, strict=True)]))


def _interleaved(bare, stage, repeat: int) -> dict[str, float]:
    """Median wall and CPU seconds of ``bare`` and ``stage``, run in alternation ``repeat``
    times after a warm-up, so that other jobs on the machine bias neither side."""
    bare(), stage()  # warm-up (primitive creation, first touch)
    wall: dict[str, list[float]] = {"bare": [], "stage": []}
    cpu: dict[str, list[float]] = {"bare": [], "stage": []}
    for _ in range(repeat):
        for name, fn in (("bare", bare), ("stage", stage)):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    out = {k: statistics.median(v) for k, v in wall.items()}
    out.update({f"cpu_{k}": statistics.median(v) for k, v in cpu.items()})
    return out


def _bare(model, images: list[torch.Tensor]):
    """The bare inference loop of ``model``'s runtime over normalised image batches."""
    backend = model.backend
    if model.resolved.runtime == "torch":
        net = model.net.to(memory_format=_layout(model))  # the layout of this row, shared net
        batches = [b.contiguous(memory_format=_layout(model)) for b in images]

        def loop() -> None:
            with torch.inference_mode(), backend._autocast():
                for b in batches:
                    net(b)

        return loop
    backend.features(images[0][:1])  # convert/compile the plain network graph once
    run = backend._runs["net"]
    arrays = [np.ascontiguousarray(b.numpy()) for b in images]

    def loop() -> None:
        for a in arrays:
            run(a)

    return loop


def _layout(model) -> torch.memory_format:
    return torch.channels_last if model.channels_last else torch.contiguous_format


def _options(quick: bool) -> list[tuple[str, dict]]:
    rows = [
        ("torch fp32 NCHW", {"runtime": "torch", "channels_last": False}),
        ("torch fp32 channels-last", {"runtime": "torch"}),
        ("torch bf16 autocast", {"runtime": "torch", "precision": "bf16"}),
        ("onnxruntime fp32", {"runtime": "onnxruntime"}),
        ("openvino fp32", {"runtime": "openvino"}),
        ("openvino bf16", {"runtime": "openvino", "precision": "bf16"}),
        (
            "openvino int8 (NNCF, depthwise/first/last conv fp32)",
            {"runtime": "openvino", "precision": "int8"},
        ),
    ]
    return rows[1:2] + rows[4:5] if quick else rows


def run(quick: bool) -> list[Figure]:
    """Measure every runtime/precision; ``quick``: 16 real tiles, torch and OpenVINO fp32 only."""
    from embeddings import (
        EmbedConfig,
        PrecisionUnavailableError,
        RuntimeUnavailableError,
        embed_tiles,
        load_model,
    )
    from embeddings._embed import network_input

    threads = cpu_threads()
    torch.set_num_threads(threads)
    n_tiles, n_speed, repeat = (12, 2, 3) if quick else (96, 8, 3)
    batch = 64
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        n_cal = 0 if quick else CALIBRATION_TILES
        both, what = real_tiles(Path(tmp), n_tiles + n_cal, quick)
        tiles, calibration = both[:n_tiles], both[n_tiles:]
        what = what.replace(f"{len(both)} ", f"{len(tiles)} ", 1)
        setting = f"{threads} thread(s), batch {batch}, {what}; cores shared with other jobs"
        base = load_model(config=EmbedConfig(runtime="torch", batch_size=batch))
        reference = embed_tiles(base, tiles)  # torch fp32: the accuracy reference
        speed_tiles = tiles[:n_speed]
        images = torch.from_numpy(network_input(base, speed_tiles))
        batches = [images[i : i + batch] for i in range(0, len(images), batch)]
        n_img = len(images)
        rows: list[tuple[str, float | None, str]] = []
        for label, opts in _options(quick):
            try:
                model = base.with_config(EmbedConfig(batch_size=batch, **opts))
                if model.resolved.precision == "int8":
                    model.calibration = calibration  # the project's own tiles, not evaluated
                loop = _bare(model, batches)
            except (PrecisionUnavailableError, RuntimeUnavailableError) as exc:
                rows.append((label, None, f"skipped: {exc}"))
                continue
            vectors = reference if label == "torch fp32 channels-last" else None
            if vectors is None:
                vectors = embed_tiles(model, tiles)
            t = _interleaved(loop, lambda m=model: embed_tiles(m, speed_tiles), repeat)
            cos = np.sum(vectors * reference, axis=1)
            note = (
                f"class {model.numerical_class}; cosine vs torch fp32 mean {cos.mean():.6f} / "
                f"min {cos.min():.6f}; recall@10 {recall_at_k(reference, vectors):.3f}; "
                f"stage/bare loop {t['bare'] / t['stage']:.3f} wall, "
                f"{t['cpu_bare'] / t['cpu_stage']:.3f} CPU time "
                f"({n_img / t['stage']:.1f} images/s through embed_tiles)"
            )
            rows.append((label, n_img / t["bare"], note))
        baseline = dict((r[0], r[1]) for r in rows)["torch fp32 channels-last"]
        for label, ips, note in rows:
            figures.append(
                Figure(
                    STAGE,
                    f"{label} images/s",
                    ips or 0.0,
                    "images/s",
                    baseline_name="torch fp32 channels-last" if ips else "",
                    baseline=baseline if ips else None,
                    goal=">= 4 at recall@10 1.000" if label == "openvino fp32" else "",
                    note=note,
                )
            )
        figures.append(
            Figure(STAGE, "setting", float(n_img), "images", note=f"speed on {n_img}; {setting}")
        )
        figures.extend(_honest_noise(base, tiles[: 4 if quick else 32], quick))
        figures.extend(_in_process(Path(tmp), quick))
    return figures


def _honest_noise(base, tiles: np.ndarray, quick: bool) -> list[Figure]:
    """Largest 1 - cos between honest recomputations (1 vs 2 threads, batch 8 vs 64)."""
    from embeddings import EmbedConfig, class_min_cosine, embed_tiles, runnable_classes

    out = []
    for cls in runnable_classes():
        runtime, precision = cls.split("-")[:2]
        if quick and runtime == "onnxruntime":
            continue
        runs = [
            embed_tiles(
                base.with_config(
                    EmbedConfig(runtime=runtime, precision=precision, threads=t, batch_size=b)
                ),
                tiles,
            )
            for t, b in ((2, 64), (1, 64), (2, 8))[: 2 if quick else 3]
        ]
        worst = max(float(1 - np.sum(r * runs[0], axis=1).min()) for r in runs[1:])
        out.append(
            Figure(
                STAGE,
                f"honest 1-cos {cls}",
                worst,
                "1-cos",
                note=f"{len(tiles)} real tiles; CLASS_MIN_COSINE allows 1-cos "
                f"{1 - class_min_cosine(cls):.0e}",
            )
        )
    return out


def _in_process(tmp: Path, quick: bool) -> list[Figure]:
    """``hubcat embed --in-process`` tiles/s on a real tile store, OpenVINO against torch."""
    from embeddings import ENV_RUNTIME
    from grid import GridConfig, run_units
    from tiling import TileStore, TilingConfig

    hst = _hst_dir() / OTHERS[1]
    if not hst.is_file():
        return []
    rates = {}
    summary = {}
    for runtime in ("torch", "openvino"):
        config = TilingConfig(zooms=(1,) if quick else (1, 2), stride=None if quick else 112)
        store = TileStore.create(tmp / f"store-{runtime}", config)
        store.add_mosaic(hst)
        previous = os.environ.get(ENV_RUNTIME)
        os.environ[ENV_RUNTIME] = runtime  # the worker thread loads the model as the command does
        try:
            report = run_units(
                store, config=GridConfig(in_process=True, n_workers=1, threads_per_worker=2)
            )
        finally:
            if previous is None:
                os.environ.pop(ENV_RUNTIME, None)
            else:
                os.environ[ENV_RUNTIME] = previous
        summary["tiles_done"] = sum(len(u.tile_ids) for u in store.units())
        rates[runtime] = summary["tiles_done"] / report.elapsed
    return [
        Figure(
            STAGE,
            "embed in-process tiles/s (openvino)",
            rates["openvino"],
            "tiles/s",
            baseline_name="the same with runtime torch",
            baseline=rates["torch"],
            note=f"hubcat embed --in-process on {summary['tiles_done']} tiles of {hst.name} "
            "(read from the tile store, 8 augmentations, pooled, written)",
        )
    ]
