"""Search stage: approximate index against exact search, and search quality on real sky.

Figures (baselines measured in this run):

- For each approximate kind (HNSW and IVF-PQ, as :mod:`catalog._index` builds them with the
  default :class:`catalog.CatalogConfig`) at each size: recall@10 against exact inner-product
  search (goal >= 0.95), queries/s against exact search's queries/s on the same batch of queries
  (goal >= 10x at 10^6), build time against building the exact index, and bytes per vector
  against the raw float32 vector (5,120 B at dimension 1280).
  Sizes: 10^5 and 10^6 vectors of dimension 1280 (``HUBCAT_BENCH_SEARCH_SIZES=100000`` skips
  10^6, which needs ~16 GB and an hour to build on two cores); ``--quick`` uses 5x10^3 vectors,
  HNSW only, 50 queries and one mosaic, as a smoke run that stays under a minute on two idle cores.
- shift-retrieval@1 on the real HST mosaics in ``../shared/data/hst/``: grid tiles at a stride of
  half a tile, and the same tiles shifted by a quarter tile in x and y; a shifted tile scores when
  its nearest grid tile (8-augmentation pooled embeddings, cosine) is one of the grid tiles it
  overlaps most. The default model (pretrained ImageNet weights) against the same network with
  timm's random initialisation (seed 0).

Synthetic vectors: real embeddings are clustered on a low-dimensional manifold, so uniform random
vectors (on which every approximate index does badly and no real catalogue resembles) are not
used. Each vector is ``0.35 * c + B z + 0.1 e``: ``c`` one of 1,000 random cluster centres, ``z`` a
32-d Gaussian mapped by a fixed random basis ``B`` (a shared low-rank manifold), ``e`` isotropic
noise; then L2-normalised. Queries are fresh draws from the same distribution.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from benchmarks._common import Figure, cpu_threads

STAGE = "search"
DIM = 1280
K = 10


def synthetic_vectors(n: int, *, seed: int = 0, d: int = DIM, chunk: int = 50_000) -> np.ndarray:
    """``n`` clustered unit vectors (see the module docstring), float32 [n, d]."""
    rng = np.random.default_rng(12345)  # the distribution (centres, basis) is fixed
    centres = rng.normal(size=(1000, d)).astype(np.float32)
    basis = (rng.normal(size=(32, d)) / np.sqrt(32)).astype(np.float32)
    draw = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = 0.35 * centres[draw.integers(0, len(centres), m)]
        x += draw.standard_normal((m, 32), dtype=np.float32) @ basis
        x += 0.1 * draw.standard_normal((m, d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + m] = x
    return out


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found, truth, strict=True)])
    )


def ann_figures(n: int, n_queries: int, kinds: tuple[str, ...] = ("hnsw", "ivfpq")) -> list[Figure]:
    """Recall, speed, build time and memory of each approximate kind at ``n`` vectors."""
    import faiss

    from catalog import CatalogConfig
    from catalog._index import build_index, search_index, serialize_index

    faiss.omp_set_num_threads(cpu_threads())
    x = synthetic_vectors(n, seed=0)
    q = synthetic_vectors(n_queries, seed=1)
    t0 = time.perf_counter()
    exact = faiss.IndexFlatIP(DIM)
    exact.add(x)
    exact_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, truth = exact.search(q, K)
    exact_qps = n_queries / (time.perf_counter() - t0)
    label = f"1e{round(np.log10(n))}" if n in (10**5, 10**6) else f"{n:.0e}"
    figures = [
        Figure(
            STAGE,
            f"exact queries/s @{label}",
            exact_qps,
            "q/s",
            note=f"{n} x {DIM} float32, batch of {n_queries} queries",
        ),
    ]
    config = CatalogConfig()
    for kind in kinds:
        t0 = time.perf_counter()
        index = build_index(x, config, kind)
        build = time.perf_counter() - t0
        search_index(index, q[: min(10, n_queries)], K, config)  # warm-up
        t0 = time.perf_counter()
        _, ids = search_index(index, q, K, config)
        qps = n_queries / (time.perf_counter() - t0)
        recall = _recall(ids, truth)
        nbytes = len(serialize_index(index)) / n
        goal_speed = ">= 10" if n >= 10**6 else ""
        params = {
            "hnsw": f"M={config.hnsw_m} efC={config.hnsw_ef_construction} efS={config.hnsw_ef_search}",
            "ivfpq": f"nprobe={config.ivf_nprobe} PQ{config.pq_m} refine x{config.refine_factor}",
        }[kind]
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
                STAGE, f"{kind} queries/s @{label}", qps, "q/s", "exact", exact_qps, goal=goal_speed
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


def shift_retrieval(model, mosaics: list[tuple[np.ndarray, np.ndarray, list, list]]) -> float:
    """Fraction of shifted tiles whose nearest grid tile (same mosaic) is a most-overlapping one."""
    from embeddings import embed_tiles

    hits = total = 0
    for grid, shifted, _origins, best in mosaics:
        if not len(shifted):
            continue
        g = embed_tiles(model, grid)
        s = embed_tiles(model, shifted)
        top = np.argmax(s @ g.T, axis=1)
        hits += sum(int(t in b) for t, b in zip(top, best, strict=True))
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
    figures: list[Figure] = []
    if quick:
        figures += ann_figures(5_000, 50, kinds=("hnsw",))
    else:
        sizes = [
            int(s) for s in os.environ.get("HUBCAT_BENCH_SEARCH_SIZES", "100000,1000000").split(",")
        ]
        for n in sizes:
            figures += ann_figures(n, 1000)
    figures += real_sky_figures(quick)
    return figures
