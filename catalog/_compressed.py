"""The compressed index: product-quantised codes in memory, exact re-rank from stored vectors.

Kind ``ivfpq_rerank`` (:data:`catalog.INDEX_KINDS`). A PCA learned on a sample of the catalogue
reduces the unit vectors to ``compressed_dim`` dimensions; an IVF coarse quantiser and a product
quantiser of ``compressed_pq_m`` bytes per vector encode them (FAISS's
``PCA256,IVF4096,PQ64`` recipe: an :class:`faiss.IndexPreTransform` over an
:class:`faiss.IndexIVFPQ`), searched with the L2 metric, which ranks unit vectors exactly as the
inner product does. Only the codes (plus their 8-byte row ids) stay in memory; a query takes the
``rerank_candidates`` best codes, reads those rows' float vectors from the stored shards
(:class:`catalog._shards.VectorRows`) and ranks them by their exact inner product.

Stored objects, all listed with their sha256 in the manifest's ``index`` entry::

    versions/000001/index/trained.faiss   the trained, empty index (PCA, coarse centroids, codebooks)
    versions/000001/index/part-00000.npz  the inverted lists of one vector shard: per-list sizes,
                                          row ids and codes, and the sha256 of the trained index
                                          they were encoded with

A later version reuses the trained index and every earlier part, and encodes only its new shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import math

import faiss
import numpy as np

from catalog._config import CatalogConfig
from catalog._shards import VectorRows
from catalog.errors import CatalogError, CorruptCatalogError

__all__ = [
    "KIND",
    "PART_FORMAT",
    "CompressedIndex",
    "add_part",
    "encode_part",
    "load_index",
    "recipe_of",
    "train",
]

#: The kind name of the compressed index in the manifest and :data:`catalog.INDEX_KINDS`.
KIND = "ivfpq_rerank"
#: Format name in the header of every stored part.
PART_FORMAT = "hubcat-ivfpq-part"


def recipe_of(config: CatalogConfig, n: int, d: int) -> dict:
    """The index recipe for ``n`` vectors of dimension ``d`` (recorded in the manifest).

    Raises
    ------
    CatalogError
        If ``compressed_pq_m`` does not divide the reduced dimension.
    """
    dim = min(int(config.compressed_dim), int(d))
    if dim % config.compressed_pq_m:
        msg = (
            f"compressed_pq_m={config.compressed_pq_m} does not divide compressed_dim={dim}; "
            "choose a divisor (e.g. 64 for 256)"
        )
        raise CatalogError(msg)
    if config.ivf_nlist is not None:
        nlist = int(config.ivf_nlist)
    else:
        nlist = max(16, 2 ** round(math.log2(config.ivf_nlist_factor * math.sqrt(max(n, 1)))))
    transform = f"PCA{dim}," if dim < d else ""
    return {
        "faiss": f"{transform}IVF{nlist},PQ{config.compressed_pq_m}",
        "metric": "l2 on unit vectors (ranks as inner product); exact inner-product re-rank",
        "dim": int(d),
        "reduced_dim": dim,
        "nlist": nlist,
        "pq_m": int(config.compressed_pq_m),
        "pq_nbits": 8,
        "nprobe": int(config.compressed_nprobe),
        "rerank_candidates": int(config.rerank_candidates),
        "kmeans_iter": int(config.kmeans_iter),
        "train_size": int(config.train_size),
        "seed": int(config.seed),
        "shard_rows": int(config.shard_rows),
    }


def train(sample: np.ndarray, recipe: dict) -> faiss.Index:
    """Train the PCA, coarse quantiser and codebooks of ``recipe`` on unit-norm ``sample``.

    Raises
    ------
    CatalogError
        Too few sample vectors for the recipe's cells or codebooks.
    """
    need = max(int(recipe["nlist"]), 2 ** int(recipe["pq_nbits"]))
    if len(sample) < need:
        msg = (
            f"the compressed index {recipe['faiss']} needs at least {need} vectors to train; got "
            f"{len(sample)}. Use a smaller kind for so few vectors (CatalogConfig.compressed_min)"
        )
        raise CatalogError(msg)
    index = faiss.index_factory(int(recipe["dim"]), recipe["faiss"], faiss.METRIC_L2)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.cp.niter = int(recipe["kmeans_iter"])
    ivf.cp.seed = int(recipe["seed"])
    ivf.do_polysemous_training = False  # the factory's default; costly and unused here
    ivf.pq.cp.niter = int(recipe["kmeans_iter"])
    ivf.pq.cp.seed = int(recipe["seed"])
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    if isinstance(index, faiss.IndexPreTransform):  # keep only what applying the PCA needs
        pca = faiss.downcast_VectorTransform(index.chain.at(0))
        pca.PCAMat.clear()
        pca.eigenvalues.clear()
    return index


def _empty_like(trained: faiss.Index) -> tuple[faiss.Index, faiss.IndexIVF]:
    index = faiss.clone_index(trained)
    return index, faiss.downcast_index(faiss.extract_index_ivf(index))


def encode_part(
    trained: faiss.Index, trained_sha256: str, vectors: np.ndarray, first_row: int
) -> bytes:
    """Encode ``vectors`` (rows ``first_row``...) and return the part's bytes.

    Parameters
    ----------
    trained : faiss.Index
        The trained, empty index.
    trained_sha256 : str
        sha256 of its stored bytes (written into the part, checked when it is loaded).
    vectors : numpy.ndarray, float32 (n, D), unit-norm
    first_row : int

    Returns
    -------
    bytes
        An ``.npz`` (no pickles) holding ``header`` (JSON), ``sizes``, ``ids`` and ``codes``.
    """
    index, ivf = _empty_like(trained)
    n = len(vectors)
    ids = np.arange(first_row, first_row + n, dtype=np.int64)
    if n:
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
    invl = ivf.invlists
    cs = int(invl.code_size)
    sizes = np.array([invl.list_size(i) for i in range(ivf.nlist)], dtype=np.int64)
    all_ids = np.empty(int(sizes.sum()), dtype=np.int64)
    codes = np.empty(int(sizes.sum()) * cs, dtype=np.uint8)
    off = 0
    for i in np.flatnonzero(sizes):
        m = int(sizes[i])
        all_ids[off : off + m] = faiss.rev_swig_ptr(invl.get_ids(int(i)), m)
        codes[off * cs : (off + m) * cs] = faiss.rev_swig_ptr(invl.get_codes(int(i)), m * cs)
        off += m
    header = {
        "format": PART_FORMAT,
        "trained_sha256": trained_sha256,
        "nlist": int(ivf.nlist),
        "code_size": cs,
        "rows": n,
        "first_row": int(first_row),
    }
    buf = io.BytesIO()
    np.savez(
        buf,
        header=np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8),
        sizes=sizes,
        ids=all_ids,
        codes=codes,
    )
    return buf.getvalue()


def add_part(index: faiss.Index, data: bytes, entry: dict, trained_sha256: str, where: str) -> None:
    """Add one stored part's inverted lists to ``index`` (the lists of ``merge_from``).

    Raises
    ------
    CorruptCatalogError
        The part is unreadable, was encoded with another codebook, or its lists disagree with
        its header or with the manifest (the message names the part).
    """
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    key = entry["key"]
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            header = json.loads(z["header"].tobytes())
            sizes, ids, codes = z["sizes"], z["ids"], z["codes"]
    except (ValueError, OSError, KeyError, json.JSONDecodeError, EOFError) as exc:
        msg = f"index part {key} of {where} is not a readable part ({type(exc).__name__}); rebuild the index"
        raise CorruptCatalogError(msg) from None
    cs = int(ivf.invlists.code_size)
    problems = []
    if header.get("format") != PART_FORMAT:
        problems.append(f"format {header.get('format')!r}, expected {PART_FORMAT!r}")
    if header.get("trained_sha256") != trained_sha256:
        problems.append(
            f"its codes were encoded with codebook {str(header.get('trained_sha256'))[:12]}..., "
            f"not this index's {trained_sha256[:12]}..."
        )
    if int(header.get("nlist", -1)) != ivf.nlist or len(sizes) != ivf.nlist:
        problems.append(f"{len(sizes)} inverted lists, the codebook has {ivf.nlist}")
    if int(header.get("code_size", -1)) != cs or codes.size != len(ids) * cs:
        problems.append(f"codes of {header.get('code_size')} bytes, the codebook's are {cs}")
    rows, first = int(entry["rows"]), int(entry["first_row"])
    if int(sizes.sum()) != len(ids) or len(ids) != rows:
        problems.append(f"{len(ids)} codes, the manifest records {rows}")
    elif rows and (ids.min() < first or ids.max() >= first + rows):
        problems.append(f"row ids outside {first}..{first + rows - 1}")
    if problems:
        msg = (
            f"index part {key} of {where} does not match its codebook or manifest: "
            + "; ".join(problems)
            + ". Rebuild the index with `hubcat build --rebuild-index`"
        )
        raise CorruptCatalogError(msg)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    off = 0
    for i in np.flatnonzero(sizes):
        m = int(sizes[i])
        ivf.invlists.add_entries(
            int(i), m, faiss.swig_ptr(ids[off : off + m]), faiss.swig_ptr(codes[off * cs :])
        )
        off += m
    ivf.ntotal += rows
    index.ntotal = ivf.ntotal


class CompressedIndex:
    """An ``ivfpq_rerank`` index: codes in memory, candidates re-ranked from stored vectors.

    Parameters
    ----------
    index : faiss.Index
        The trained index with every part added.
    rows : VectorRows
        Reader of the stored float vectors.
    recipe : dict
        The manifest's recipe (``nprobe``, ``rerank_candidates``, ...).
    """

    kind = KIND

    def __init__(self, index: faiss.Index, rows: VectorRows, recipe: dict) -> None:
        self.index = index
        self.ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        self.rows = rows
        self.recipe = dict(recipe)

    @property
    def ntotal(self) -> int:
        """Number of encoded vectors."""
        return int(self.ivf.ntotal)

    @property
    def d(self) -> int:
        """Dimension of the vectors (before the PCA)."""
        return int(self.index.d)

    def resident_bytes(self) -> int:
        """Bytes the index holds in memory: codes, row ids, centroids, codebooks and the PCA."""
        n, cs = self.ntotal, int(self.ivf.invlists.code_size)
        total = n * (cs + 8)
        total += self.ivf.nlist * self.ivf.d * 4  # coarse centroids
        pq = self.ivf.pq
        total += pq.M * pq.ksub * pq.dsub * 4
        if isinstance(self.index, faiss.IndexPreTransform):
            lt = faiss.downcast_VectorTransform(self.index.chain.at(0))
            total += (lt.A.size() + lt.b.size()) * 4
        return int(total)

    def candidates(
        self,
        queries: np.ndarray,
        c: int,
        *,
        nprobe: int | None = None,
        allowed: np.ndarray | None = None,
    ) -> np.ndarray:
        """Row ids of the ``c`` best codes of each query (-1 where fewer exist)."""
        y = np.ascontiguousarray(queries, dtype=np.float32)
        if isinstance(self.index, faiss.IndexPreTransform):
            for i in range(self.index.chain.size()):
                y = faiss.downcast_VectorTransform(self.index.chain.at(i)).apply(y)
        params = faiss.SearchParametersIVF(
            nprobe=min(int(nprobe or self.recipe["nprobe"]), self.ivf.nlist)
        )
        if allowed is not None:
            bits = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
            params.sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
            params._keep = bits  # the selector points into these bytes
        _, ids = self.ivf.search(y, int(c), params=params)
        return ids

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        nprobe: int | None = None,
        candidates: int | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products of the re-ranked candidates: (similarities, row ids), (Q, k).

        Parameters
        ----------
        queries : numpy.ndarray, float32 (Q, D), unit-norm
        k : int
        nprobe : int, optional
            IVF cells visited (default the recipe's).
        candidates : int, optional
            Codes re-ranked per query (default the recipe's ``rerank_candidates``, at least k).
        allowed : numpy.ndarray of bool, optional
            Rows a result may come from (filters, superseded rows left out).

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            float32 similarities and int64 rows; missing neighbours have id -1 and -inf.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.d)
        c = max(int(candidates or self.recipe["rerank_candidates"]), int(k))
        cand = self.candidates(q, c, nprobe=nprobe, allowed=allowed)
        return self.rerank(q, cand, k)

    def rerank(
        self, queries: np.ndarray, cand: np.ndarray, k: int, *, block: int = 256
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rank each query's candidate rows by their exact inner product with it.

        The stored vectors of every query's candidates are read in one gather (each distinct row
        once), then ranked ``block`` queries at a time.

        Parameters
        ----------
        queries : numpy.ndarray, float32 (Q, D), unit-norm
        cand : numpy.ndarray, int64 (Q, C)
            Candidate rows of each query (-1: none).
        k : int

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            float32 similarities and int64 rows, (Q, k); missing neighbours have id -1 and -inf.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.d)
        cand = np.asarray(cand, dtype=np.int64).reshape(len(q), -1)
        sims = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        valid = cand >= 0
        uniq = np.unique(cand[valid])
        if not len(uniq):
            return sims, ids
        vec = self.rows.unique_rows(uniq)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        pos = np.searchsorted(uniq, np.where(valid, cand, uniq[0]))
        kk = min(k, cand.shape[1])
        for a in range(0, len(q), block):
            b = min(a + block, len(q))
            s = np.matmul(vec[pos[a:b]], q[a:b, :, None])[:, :, 0]
            s[~valid[a:b]] = -np.inf
            top = np.argsort(-s, axis=1, kind="stable")[:, :kk]
            got = np.take_along_axis(s, top, axis=1)
            sims[a:b, :kk] = got
            ids[a:b, :kk] = np.where(np.isfinite(got), np.take_along_axis(cand[a:b], top, 1), -1)
        return sims, ids


def _read(store, key: str, sha256: str, what: str, where: str) -> bytes:
    from catalog.errors import reading

    with reading(f"{what} {key}", where, "rebuild the index with `hubcat build --rebuild-index`"):
        data = store.get(key)
    if hashlib.sha256(data).hexdigest() != sha256:
        msg = (
            f"{what} {key} of {where} does not match the sha256 in its manifest: it is corrupt or "
            "was changed. Rebuild the index with `hubcat build --rebuild-index`"
        )
        raise CorruptCatalogError(msg)
    return data


def load_index(
    store, entry: dict, segments: list[dict], dim: int, *, where: str, on_read=None
) -> CompressedIndex:
    """Open a stored ``ivfpq_rerank`` index: the trained index, then every part's lists.

    Reads the index objects only; the vectors are read later, by row, when a query re-ranks.

    Raises
    ------
    CorruptCatalogError
        A part or the trained index is missing, corrupt or encoded with another codebook.
    ShardReadError
        The store failed while reading (the message names the object).
    """
    data = _read(store, entry["trained_key"], entry["trained_sha256"], "trained index", where)
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError:
        msg = f"trained index {entry['trained_key']} of {where} is not a readable FAISS index"
        raise CorruptCatalogError(msg) from None
    for part in entry["parts"]:
        blob = _read(store, part["key"], part["sha256"], "index part", where)
        add_part(index, blob, part, entry["trained_sha256"], where)
    rows = VectorRows(store, segments, dim, on_read=on_read)
    return CompressedIndex(index, rows, entry["recipe"])
