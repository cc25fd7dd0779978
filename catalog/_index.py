"""The catalogue's FAISS vector index: inner product on L2-normalised float32 vectors.

Four kinds (:data:`catalog._config.INDEX_KINDS`): ``flat`` (exact), ``ivfflat`` (inverted lists of
full vectors: k-means cells, only the ``nprobe`` nearest cells are scanned), ``hnsw`` (graph) and
``ivfpq`` (inverted lists of product-quantised codes, re-ranked exactly on the full vectors). Which one a
catalogue uses depends on its size (:meth:`catalog.CatalogConfig.index_kind`) and is recorded in
the manifest together with every parameter.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from catalog._config import CatalogConfig
from catalog.errors import CatalogError, CorruptCatalogError

__all__ = [
    "build_index",
    "describe_index",
    "deserialize_index",
    "exact_search",
    "index_kind_of",
    "normalise",
    "search_index",
    "serialize_index",
]


def normalise(vectors: np.ndarray, *, what: str = "vectors") -> np.ndarray:
    """Return ``vectors`` as a C-contiguous float32 array of unit-norm rows.

    Parameters
    ----------
    vectors : numpy.ndarray, shape (N, D) or (D,)
    what : str
        Name used in error messages.

    Returns
    -------
    numpy.ndarray, float32, shape (N, D)

    Raises
    ------
    CatalogError
        If a value is not finite or a row has zero norm.
    """
    x = np.array(vectors, dtype=np.float32, ndmin=2, copy=True, order="C")
    if x.ndim != 2:
        msg = f"{what} must be a 2-D array [N, D]; got shape {x.shape}"
        raise CatalogError(msg)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x).all(axis=1)).sum())
        msg = f"{what}: {bad} row(s) hold NaN or infinite values; re-embed those tiles"
        raise CatalogError(msg)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        msg = f"{what}: {int((norms == 0).sum())} row(s) have zero norm and cannot be normalised"
        raise CatalogError(msg)
    x /= norms
    return x


def _nlist(n: int, config: CatalogConfig) -> int:
    if config.ivf_nlist is not None:
        return int(config.ivf_nlist)
    return max(16, 2 ** round(math.log2(config.ivf_nlist_factor * math.sqrt(max(n, 1)))))


def _ivf(vectors: np.ndarray, config: CatalogConfig, kind: str) -> faiss.Index:
    """An untrained-then-trained IVF index (``ivfflat`` or ``ivfpq``) for ``vectors``."""
    n, d = vectors.shape
    nlist = _nlist(n, config)
    if kind == "ivfpq" and d % config.pq_m:
        msg = f"pq_m={config.pq_m} does not divide the vector dimension {d}; choose a divisor"
        raise CatalogError(msg)
    if n < 39 * nlist:
        msg = (
            f"an {kind} index with {nlist} cells needs at least {39 * nlist} vectors to train; "
            f"got {n}. Use the exact index (raise CatalogConfig.exact_max) or set ivf_nlist"
        )
        raise CatalogError(msg)
    spec = f"IVF{nlist},Flat" if kind == "ivfflat" else f"IVF{nlist},PQ{config.pq_m}np,RFlat"
    index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.niter = config.kmeans_iter
    ivf.cp.seed = config.seed
    rng = np.random.default_rng(config.seed)
    take = min(n, config.train_size)
    sample = vectors[np.sort(rng.choice(n, size=take, replace=False))] if take < n else vectors
    ivf.nprobe = config.ivf_nprobe
    if kind == "ivfpq":
        index.k_factor = float(config.refine_factor)
    index.train(sample)
    return index


def build_index(vectors: np.ndarray, config: CatalogConfig, kind: str | None = None) -> faiss.Index:
    """Build an index over unit-norm ``vectors`` (row ``i`` gets id ``i``).

    Parameters
    ----------
    vectors : numpy.ndarray, float32, shape (N, D)
        Already L2-normalised rows (see :func:`normalise`).
    config : CatalogConfig
    kind : str, optional
        ``"flat"``, ``"ivfflat"``, ``"hnsw"`` or ``"ivfpq"``; default ``config.index_kind(N)``.

    Returns
    -------
    faiss.Index

    Raises
    ------
    CatalogError
        Unknown kind, too few vectors to train the IVF cells, or ``pq_m`` not dividing D.
    """
    n, d = vectors.shape
    kind = kind or config.index_kind(n)
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        index.hnsw.efSearch = config.hnsw_ef_search
    elif kind in ("ivfflat", "ivfpq"):
        index = _ivf(vectors, config, kind)
    else:
        msg = f"unknown index kind {kind!r}; expected one of flat, ivfflat, hnsw, ivfpq"
        raise CatalogError(msg)
    if n:
        index.add(vectors)
    return index


def index_kind_of(index: faiss.Index) -> str:
    """Kind name (``flat``/``ivfflat``/``hnsw``/``ivfpq``/``ivfpq_rerank``) of an index."""
    if getattr(index, "kind", None) == "ivfpq_rerank":
        return "ivfpq_rerank"
    if isinstance(index, faiss.IndexFlat):
        return "flat"
    if isinstance(index, faiss.IndexIVFFlat):
        return "ivfflat"
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(index, faiss.IndexRefine):
        return "ivfpq"
    msg = f"unsupported FAISS index type {type(index).__name__}"
    raise CorruptCatalogError(msg)


def describe_index(index: faiss.Index, config: CatalogConfig) -> dict:
    """Manifest entry of ``index``: kind, metric, size and the parameters that shaped it."""
    kind = index_kind_of(index)
    out: dict = {
        "type": kind,
        "metric": "inner_product",
        "ntotal": int(index.ntotal),
        "dim": index.d,
    }
    if kind == "hnsw":
        out["params"] = {
            "M": config.hnsw_m,
            "efConstruction": config.hnsw_ef_construction,
            "efSearch": config.hnsw_ef_search,
        }
        out["faiss"] = f"HNSW{config.hnsw_m},Flat"
    elif kind == "ivfflat":
        out["params"] = {
            "nlist": int(index.nlist),
            "nprobe": config.ivf_nprobe,
            "kmeans_iter": config.kmeans_iter,
            "train_size": config.train_size,
            "seed": config.seed,
        }
        out["faiss"] = f"IVF{int(index.nlist)},Flat"
    elif kind == "ivfpq":
        base = faiss.downcast_index(index.base_index)
        out["params"] = {
            "nlist": int(base.nlist),
            "nprobe": config.ivf_nprobe,
            "pq_m": config.pq_m,
            "refine_factor": config.refine_factor,
            "kmeans_iter": config.kmeans_iter,
            "train_size": config.train_size,
            "seed": config.seed,
        }
        out["faiss"] = f"IVF{int(base.nlist)},PQ{config.pq_m},RFlat"
    else:
        out["faiss"] = "Flat"
    return out


def search_index(
    index: faiss.Index, queries: np.ndarray, k: int, config: CatalogConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Search ``k`` neighbours of each unit-norm query; return (similarities, row ids).

    Both outputs have shape (Q, k); missing neighbours have id -1 and similarity -inf.
    """
    if getattr(index, "kind", None) == "ivfpq_rerank":  # codes in memory, re-rank from storage
        return index.search(queries, k)
    kind = index_kind_of(index)
    if kind == "hnsw":
        params = faiss.SearchParametersHNSW(efSearch=max(config.hnsw_ef_search, k))
        sims, ids = index.search(queries, k, params=params)
    elif kind == "ivfflat":
        params = faiss.SearchParametersIVF(nprobe=min(config.ivf_nprobe, index.nlist))
        sims, ids = index.search(queries, k, params=params)
    elif kind == "ivfpq":
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", config.ivf_nprobe)
        index.k_factor = float(config.refine_factor)
        sims, ids = index.search(queries, k)
    else:
        sims, ids = index.search(queries, k)
    sims = np.where(ids < 0, -np.inf, sims).astype(np.float32)
    return sims, ids.astype(np.int64)


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search of ``queries`` in ``vectors`` (both unit-norm float32)."""
    k = min(k, len(vectors))
    if k == 0:
        empty = np.zeros((len(queries), 0))
        return empty.astype(np.float32), empty.astype(np.int64)
    sims, ids = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    return sims.astype(np.float32), ids.astype(np.int64)


def serialize_index(index: faiss.Index) -> bytes:
    """The bytes of ``index`` in FAISS's own file format."""
    return faiss.serialize_index(index).tobytes()


def deserialize_index(data: bytes, *, where: str = "index") -> faiss.Index:
    """Inverse of :func:`serialize_index`; raise :class:`CorruptCatalogError` on bad bytes."""
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as exc:
        msg = (
            f"{where} is not a readable FAISS index ({str(exc).splitlines()[0][:120]}); "
            "rebuild it from the stored vectors with `hubcat build --rebuild-index CATALOGUE`"
        )
        raise CorruptCatalogError(msg) from None
    index_kind_of(index)
    return index
