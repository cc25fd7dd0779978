"""Search stage: approximate index against exact search, and search quality on real sky.

Figures (baselines measured in this run):

- For each approximate kind (IVF-Flat, IVF-PQ with exact re-rank, HNSW; as :mod:`catalog._index`
  builds them with the default :class:`catalog.CatalogConfig`, HNSW with M 16 / efConstruction
  40) at each size: recall@10 against exact inner-product search (goal >= 0.95), queries/s against
  exact search's queries/s on the same batch of queries (goal >= 10x at 10^6), build time against
  building the exact index, and bytes per vector against the raw float32 vector (5,120 B at
  dimension 1280). Each kind's note also lists its recall/speed-up curve over ``nprobe`` (IVF) or
  ``efSearch`` (HNSW), searched on the same built index.
  Sizes: 10^5 (all three kinds) and 10^6 (IVF-Flat, the catalogue's choice, only: an HNSW graph
  of 10^6 x 1280 takes well over half an hour to build on two cores, and IVF-PQ is dominated at
  10^5 already); ``HUBCAT_BENCH_SEARCH_SIZES=100000`` skips 10^6, which
  needs ~11 GB; ``HUBCAT_BENCH_SEARCH_PARTS=compressed`` runs only the compressed index's
  figures (:mod:`benchmarks._search_compressed`). The full run takes ~15 minutes on two idle cores (over 30 when shared). ``--quick`` uses 2x10^4 vectors,
  IVF-Flat only, 50 queries and one mosaic, as a smoke run under a minute.
- shift-retrieval@1 on the real HST mosaics in ``../shared/data/hst/``: grid tiles at a stride of
  half a tile, and the same tiles shifted by a quarter tile in x and y; a shifted tile scores when
  its nearest grid tile (8-augmentation pooled embeddings, cosine) is one of the grid tiles it
  overlaps most. The default model (pretrained ImageNet weights) against the same network with
  timm's random initialisation (seed 0).

Synthetic vectors (:func:`synthetic_vectors`). Isotropic random vectors are no model of a
catalogue: at dimension 1280 every point is nearly equidistant from every other, so no
approximate index can beat a scan. Real embeddings (measured on the default model's embeddings
of the 184 grid and shifted tiles of the four real mosaics above) are instead

- dominated by a shared direction (the pooled features are non-negative): mean cosine 0.66
  between tiles of different mosaics, 0.95 within one mosaic;
- of low intrinsic dimension: the centred spectrum holds 47 % of the variance in one component,
  86 % in 8, 97 % in 32 (participation ratio ~4 on 184 tiles);
- grouped by mosaic (the tiles of one field resemble each other far more than other fields').

So each synthetic vector is ``a u + c_k + w B_w z + sigma e``, L2-normalised: ``u`` a fixed unit
direction (``a`` = 1.53), ``c_k`` one of 1,000 "mosaic" centres drawn in a 64-d subspace with a
power-law spectrum (variance of component i proportional to i^-1.6; norm ~1), ``z`` a 64-d
Gaussian mapped into the same subspace with a flatter spectrum (i^-1.3) and scale ``w`` = 0.41,
``e`` isotropic noise of norm ``sigma`` = 0.1. ``a`` and ``w`` are solved so that the mean cosine
between and within centres is the measured 0.66 / 0.95 (the synthetic gives 0.72 / 0.94); the
centre spectrum gives a participation ratio of ~5 on 184 draws (real: ~4). At 10^6 vectors a
centre holds ~1,000 tiles, about one large drizzled mosaic. Queries are fresh draws.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks._common import Figure, cpu_threads

STAGE = "search"
DIM = 1280
K = 10
#: Parameters of the synthetic distribution (see the module docstring).
SYNTH = {
    "latent": 64,
    "centres": 1000,
    "mean": 1.53,
    "spread": 0.41,
    "noise": 0.1,
    "beta_centres": 1.6,
    "beta_spread": 1.3,
}


def synthetic_vectors(n: int, *, seed: int = 0, d: int = DIM, chunk: int = 50_000) -> np.ndarray:
    """``n`` unit vectors from the calibrated synthetic distribution (module docstring).

    Parameters
    ----------
    n : int
        Number of vectors.
    seed : int
        Seed of the draws; the distribution itself (direction, basis, centres) is fixed.
    d : int
        Dimension.
    chunk : int
        Rows generated at a time (bounds the temporary memory).

    Returns
    -------
    numpy.ndarray, float32, shape (n, d)
    """
    p = SYNTH
    lat = p["latent"]
    rng = np.random.default_rng(12345)
    q, _ = np.linalg.qr(rng.normal(size=(d, lat + 1)))
    u, basis = q[:, 0], q[:, 1:].T
    i = np.arange(1, lat + 1)
    s_c = i ** (-p["beta_centres"] / 2)
    s_w = i ** (-p["beta_spread"] / 2)
    b_c = (s_c[:, None] / np.linalg.norm(s_c) * basis).astype(np.float32)
    b_w = (p["spread"] * s_w[:, None] / np.linalg.norm(s_w) * basis).astype(np.float32)
    centres = rng.normal(size=(p["centres"], lat)).astype(np.float32) @ b_c
    centres += (p["mean"] * u).astype(np.float32)
    draw = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[draw.integers(0, len(centres), m)]
        x += draw.standard_normal((m, lat), dtype=np.float32) @ b_w
        x += (p["noise"] / np.sqrt(d)) * draw.standard_normal((m, d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + m] = x
    return out


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found, truth, strict=True)])
    )


#: Configuration each kind is measured with: the catalogue default, HNSW at a moderate build cost.
def _bench_config(kind: str):
    from catalog import CatalogConfig

    if kind == "hnsw":
        return CatalogConfig(hnsw_m=16, hnsw_ef_construction=40)
    return CatalogConfig()


#: Search parameter swept per kind on the built index (the default config's value is marked).
SWEEP = {"ivfflat": (2, 4, 8, 16, 32, 64), "ivfpq": (4, 16, 64), "hnsw": (32, 64, 128, 256)}


def _progress(text: str) -> None:
    print(f"  [search] {text}", file=sys.stderr, flush=True)


def _timed_search(index, q: np.ndarray, config) -> tuple[float, np.ndarray]:
    from catalog._index import search_index

    search_index(index, q[: min(10, len(q))], K, config)  # warm-up
    t0 = time.perf_counter()
    _, ids = search_index(index, q, K, config)
    return time.perf_counter() - t0, ids


def ann_figures(
    n: int, n_queries: int, kinds: tuple[str, ...] = ("ivfflat", "ivfpq", "hnsw")
) -> list[Figure]:
    """Recall, speed, build time and memory of each approximate kind at ``n`` vectors."""
    from dataclasses import replace

    import faiss

    from catalog._index import build_index, serialize_index

    faiss.omp_set_num_threads(cpu_threads())
    t0 = time.perf_counter()
    x = synthetic_vectors(n, seed=0)
    q = synthetic_vectors(n_queries, seed=1)
    generate = time.perf_counter() - t0
    t0 = time.perf_counter()
    exact = faiss.IndexFlatIP(DIM)
    exact.add(x)
    exact_build = time.perf_counter() - t0
    del exact
    # exact search: the ground truth and the speed baseline, one BLAS batch of all queries
    t0 = time.perf_counter()
    _, truth = faiss.knn(q, x, K, metric=faiss.METRIC_INNER_PRODUCT)
    exact_qps = n_queries / (time.perf_counter() - t0)
    _progress(f"{n} vectors generated in {generate:.0f} s; exact search {exact_qps:.0f} q/s")
    label = f"1e{round(np.log10(n))}" if n in (10**5, 10**6) else f"{n:.0e}"
    figures = [
        Figure(
            STAGE,
            f"exact queries/s @{label}",
            exact_qps,
            "q/s",
            note=(
                f"{n} x {DIM} float32 (generated in {generate:.0f} s), batch of {n_queries} "
                "queries, brute-force inner product (BLAS)"
            ),
        ),
    ]
    for kind in kinds:
        config = _bench_config(kind)
        t0 = time.perf_counter()
        index = build_index(x, config, kind)
        build = time.perf_counter() - t0
        _progress(f"{kind} over {n} vectors built in {build:.0f} s; searching")
        seconds, ids = _timed_search(index, q, config)
        qps = n_queries / seconds
        recall = _recall(ids, truth)
        nbytes = len(serialize_index(index)) / n
        field = "hnsw_ef_search" if kind == "hnsw" else "ivf_nprobe"
        curve = []
        for value in SWEEP[kind]:
            if value == getattr(config, field):
                curve.append(f"{value}*: {recall:.3f}/x{qps / exact_qps:.1f}")
                continue
            swept = replace(config, **{field: value})
            sec, found = _timed_search(index, q, swept)
            curve.append(f"{value}: {_recall(found, truth):.3f}/x{n_queries / sec / exact_qps:.1f}")
        if kind == "hnsw":
            params = f"HNSW{config.hnsw_m} efC={config.hnsw_ef_construction}"
        else:
            nlist = faiss.extract_index_ivf(index).nlist
            params = f"IVF{nlist}" + (
                f",PQ{config.pq_m} refine x{config.refine_factor}" * (kind == "ivfpq")
            )
        params += f"; {field.split('_', 1)[1]}: recall/speed-up " + ", ".join(curve)
        figures += [
            Figure(
                STAGE,
                f"{kind} recall@10 @{label}",
                recall,
                "",
                "exact",
                1.0,
                goal=">= 0.95",
                note=params,
            ),
            Figure(
                STAGE,
                f"{kind} queries/s @{label}",
                qps,
                "q/s",
                "exact",
                exact_qps,
                goal=">= 10" if n >= 10**6 else "",
            ),
            Figure(STAGE, f"{kind} build time @{label}", build, "s", "exact build", exact_build),
            Figure(STAGE, f"{kind} bytes/vector @{label}", nbytes, "B", "raw float32", DIM * 4.0),
        ]
        del index
    return figures


# --------------------------------------------------------------------------- real sky

#: Real mosaics used for shift-retrieval (file, HDU name or index); the quick run uses the first.
SHIFT_FILES: tuple[tuple[str, str | int], ...] = (
    ("mpdaf_HST-HDFS.fits", "DATA"),
    ("abell_2744_cd_galaxy_f105w.fits.gz", 0),
    ("galsim_cosmos_147246.0_150.416558_1.998697_masknoise.fits", 0),
    ("drizzle_reference_square_image_acs-hrc_f606w_ngc104.fits", "SCI"),
)


def _hst_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "hst"
    return Path(os.environ.get("HUBCAT_TEST_DATA", default))


def shift_tiles(
    path: Path, hdu: str | int, size: int = 224
) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Grid tiles (stride size/2) and quarter-tile-shifted tiles of one mosaic, stretched.

    Returns ``(grid, shifted, grid_origins, best)``: ``best[i]`` is the set of grid indices that
    overlap shifted tile ``i`` most. Tiles with less than half valid pixels are dropped.
    """
    from astropy.io import fits

    from tiling import StretchParams, stretch

    with fits.open(path) as hdul:
        data = np.asarray(hdul[hdu].data, dtype=np.float64)
        weight = np.asarray(hdul["WHT"].data) if "WHT" in hdul else None
    valid = np.isfinite(data)
    if weight is not None:
        valid &= weight > 0
    lo, hi = np.percentile(data[valid], (0.5, 99.9))
    params = StretchParams(float(lo), float(hi), 0.1)
    stride, shift = size // 2, size // 4
    ny, nx = data.shape

    def cut(y0: int, x0: int) -> np.ndarray | None:
        box = valid[y0 : y0 + size, x0 : x0 + size]
        if box.shape != (size, size) or box.mean() < 0.5:
            return None
        return stretch(data[y0 : y0 + size, x0 : x0 + size], params, box)

    grid, origins = [], []
    for y0 in range(0, ny - size + 1, stride):
        for x0 in range(0, nx - size + 1, stride):
            tile = cut(y0, x0)
            if tile is not None:
                grid.append(tile)
                origins.append((x0, y0))
    shifted, best = [], []
    for y0 in range(shift, ny - size + 1, stride):
        for x0 in range(shift, nx - size + 1, stride):
            tile = cut(y0, x0)
            if tile is None:
                continue
            overlaps = np.array(
                [max(0, size - abs(x0 - gx)) * max(0, size - abs(y0 - gy)) for gx, gy in origins]
            )
            if overlaps.size == 0 or overlaps.max() == 0:
                continue
            shifted.append(tile)
            best.append(set(np.flatnonzero(overlaps == overlaps.max())))
    return np.array(grid, dtype=np.float32), np.array(shifted, dtype=np.float32), origins, best


def shift_hits(grid_vecs: np.ndarray, shifted_vecs: np.ndarray, best: list) -> int:
    """How many shifted tiles have a most-overlapping grid tile as their nearest (cosine)."""
    if not len(shifted_vecs):
        return 0
    top = np.argmax(shifted_vecs @ grid_vecs.T, axis=1)
    return sum(int(t in b) for t, b in zip(top, best, strict=True))


def shift_retrieval(model, mosaics: list[tuple[np.ndarray, np.ndarray, list, list]]) -> float:
    """Fraction of shifted tiles whose nearest grid tile (same mosaic) is a most-overlapping one."""
    from embeddings import embed_tiles

    hits = total = 0
    for grid, shifted, _origins, best in mosaics:
        if not len(shifted):
            continue
        hits += shift_hits(embed_tiles(model, grid), embed_tiles(model, shifted), best)
        total += len(shifted)
    return hits / total if total else float("nan")


def random_weights_model(model, seed: int = 0):
    """The same network as ``model`` with timm's random initialisation (a baseline only)."""
    import timm
    import torch

    from embeddings import EmbeddingModel

    torch.manual_seed(seed)
    net = timm.create_model(model.spec.timm_name, pretrained=False)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return EmbeddingModel(
        net, model.spec, f"random-init-seed{seed}", model.weights_path, model.config
    )


def real_sky_figures(quick: bool) -> list[Figure]:
    import torch

    from embeddings import EmbedConfig, load_model

    hst = _hst_dir()
    files = SHIFT_FILES[:1] if quick else SHIFT_FILES
    present = [(hst / f, h) for f, h in files if (hst / f).is_file()]
    if not present:
        return [Figure(STAGE, "shift-retrieval@1", float("nan"), "", note=f"no HST files at {hst}")]
    torch.set_num_threads(cpu_threads())
    mosaics = [shift_tiles(path, hdu) for path, hdu in present]
    n_shifted = sum(len(m[1]) for m in mosaics)
    n_grid = sum(len(m[0]) for m in mosaics)
    model = load_model(config=EmbedConfig(threads=cpu_threads()))
    t0 = time.perf_counter()
    pretrained = shift_retrieval(model, mosaics)
    seconds = time.perf_counter() - t0
    rand = shift_retrieval(random_weights_model(model), mosaics)
    return [
        Figure(
            STAGE,
            "shift-retrieval@1 pretrained",
            pretrained,
            "",
            "random weights",
            rand,
            goal="clearly > random",
            note=(
                f"{n_shifted} shifted vs {n_grid} grid tiles from {len(mosaics)} real mosaic(s) "
                f"({', '.join(p.name[:24] for p, _ in present)}); embedding took {seconds:.0f} s"
            ),
        )
    ]


def run(quick: bool) -> list[Figure]:
    """The search figures; ``HUBCAT_BENCH_SEARCH_PARTS`` (``ann,compressed,sky``) picks parts."""
    parts = set(os.environ.get("HUBCAT_BENCH_SEARCH_PARTS", "ann,compressed,sky").split(","))
    figures: list[Figure] = []
    if "ann" in parts and quick:
        figures += ann_figures(20_000, 50, kinds=("ivfflat",))  # IVF needs 39 x nlist to train
    elif "ann" in parts:
        sizes = [
            int(s) for s in os.environ.get("HUBCAT_BENCH_SEARCH_SIZES", "100000,1000000").split(",")
        ]
        for n in sizes:
            kinds = ("ivfflat", "ivfpq", "hnsw") if n <= 10**5 else ("ivfflat",)
            figures += ann_figures(n, 500, kinds)
    if "compressed" in parts:
        from benchmarks._search_compressed import run as compressed

        figures += compressed(quick)  # the archive-scale index (benchmarks/_search_compressed.py)
    if "sky" in parts:
        figures += real_sky_figures(quick)
    return figures
