"""Configuration of the catalogue stage: one dataclass, recorded in the manifest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from catalog.errors import CatalogError

__all__ = ["INDEX_KINDS", "CatalogConfig"]

#: Index kinds the catalogue can build: exact inner product, IVF of full vectors, HNSW graph,
#: IVF-PQ with exact re-rank from in-memory vectors, and the compressed index (PCA + IVF-PQ codes
#: in memory, exact re-rank from the stored vectors, built on Dask; :mod:`catalog._compressed`).
INDEX_KINDS: tuple[str, ...] = ("flat", "ivfflat", "hnsw", "ivfpq", "ivfpq_rerank")


@dataclass(frozen=True)
class CatalogConfig:
    """Parameters of the catalogue's vector index and of its query defaults.

    Every field that changes a stored output (the index) is part of :attr:`digest`, which the
    manifest records next to the values themselves.

    Parameters
    ----------
    exact_max : int
        Largest number of vectors kept in an exact (flat inner-product) index; above it the
        ``approximate`` kind is built. Default 200,000: exact search over 2x10^5 vectors of
        dimension 1280 still answers a query in tens of milliseconds on two cores.
    approximate : str
        Index kind above ``exact_max``: ``"ivfflat"``, ``"hnsw"`` or ``"ivfpq"``. IVF-Flat was
        chosen by the search benchmark (``python -m benchmarks search``; figures and reasons in
        ``docs/search.md``): on vectors calibrated against real embeddings it meets recall@10
        >= 0.95 at the largest speed-up over exact search, builds in minutes where an HNSW graph
        takes the better part of an hour at 10^6 vectors, and stores little beyond the vectors.
    hnsw_m : int
        Neighbours per node of the HNSW graph.
    hnsw_ef_construction : int
        Candidate list size while the HNSW graph is built.
    hnsw_ef_search : int
        Candidate list size at query time (recall/speed trade-off).
    ivf_nlist : int or None
        Number of IVF cells; ``None`` picks ``ivf_nlist_factor * sqrt(N)`` rounded to a power of
        two.
    ivf_nlist_factor : int
        Cells per ``sqrt(N)`` when ``ivf_nlist`` is ``None``.
    ivf_nprobe : int
        IVF cells visited per query (recall/speed trade-off).
    kmeans_iter : int
        k-means iterations that train the IVF cells (training time is linear in it).
    pq_m : int
        Sub-quantisers of the product quantiser (bytes per vector of the PQ code).
    refine_factor : int
        IVF-PQ candidates re-ranked exactly per requested neighbour.
    train_size : int
        At most this many vectors train the IVF-PQ quantisers (a seeded random subset).
    seed : int
        Seed of every random choice (training subset, k-means).
    anomaly_k : int
        Default neighbour rank of :meth:`catalog.Catalogue.anomalies`.
    compressed_min : int
        Above this many vectors the compressed ``ivfpq_rerank`` kind is built whatever
        ``approximate`` says: its memory is ~80 bytes per vector where an IVF-Flat index holds
        5,149 (``docs/search.md``).
    compressed_dim : int
        Dimension the compressed index's PCA reduces the vectors to (no PCA when >= D).
    compressed_pq_m : int
        Bytes of the product-quantised code of one vector (sub-quantisers of 8 bits).
    compressed_nprobe : int
        IVF cells the compressed index visits per query.
    rerank_candidates : int
        Codes re-ranked exactly (their stored vectors read) per query.
    shard_rows : int
        Largest number of rows in one vector shard (and so in one index part): 131,072 rows of
        dimension 1280 are 640 MiB, under the 1 GiB bound on any one object.
    build_workers : int
        Dask worker processes of the LocalCluster that encodes the shards when no client is
        given (1: encode in the building process).
    recall_probes : int
        Catalogue vectors used as queries to measure the compressed index's recall@10 against an
        exact search at build time (recorded in the manifest; 0 skips the measurement).
    metadata_shard_rows : int
        Largest number of rows in one metadata parquet shard (rows sorted by HEALPix index of
        the tile centre; see :mod:`catalog._metashards`).
    row_group_rows : int
        Largest number of rows in one parquet row group of a metadata shard (a cone search
        reads whole row groups).
    leaf_shard_rows : int
        Largest number of provenance leaves in one ``provenance/leaves/`` shard.
    """

    exact_max: int = 200_000
    approximate: str = "ivfflat"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    ivf_nlist: int | None = None
    ivf_nlist_factor: int = 4
    ivf_nprobe: int = 16
    kmeans_iter: int = 10
    pq_m: int = 64
    refine_factor: int = 8
    train_size: int = 100_000
    seed: int = 0
    anomaly_k: int = 5
    compressed_min: int = 1_000_000
    compressed_dim: int = 256
    compressed_pq_m: int = 64
    compressed_nprobe: int = 16
    rerank_candidates: int = 50
    shard_rows: int = 131_072
    build_workers: int = 2
    recall_probes: int = 100
    metadata_shard_rows: int = 1_048_576
    row_group_rows: int = 16_384
    leaf_shard_rows: int = 1_048_576

    def __post_init__(self) -> None:
        if self.approximate not in INDEX_KINDS[1:]:
            msg = (
                f"CatalogConfig.approximate={self.approximate!r} is not an approximate index kind; "
                f"choose one of {INDEX_KINDS[1:]}"
            )
            raise CatalogError(msg)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("approximate", "ivf_nlist", "seed"):
                continue
            if f.name == "recall_probes" and value == 0:
                continue
            if not isinstance(value, int) or value < 1:
                msg = f"CatalogConfig.{f.name}={value!r} must be a positive integer"
                raise CatalogError(msg)
        if self.exact_max < 1:
            msg = f"CatalogConfig.exact_max={self.exact_max!r} must be >= 1"
            raise CatalogError(msg)

    def to_dict(self) -> dict:
        """Plain-JSON dictionary of every field.

        Returns
        -------
        dict
            ``{field name: value}`` for every field (ints, and the ``approximate`` index kind as
            a string); what the manifest records under ``"config"``.
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CatalogConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error.

        Parameters
        ----------
        data : dict
            ``{field name: value}``, as :meth:`to_dict` gives; missing fields take their
            defaults.

        Returns
        -------
        CatalogConfig
            The configuration, checked as on construction.

        Raises
        ------
        CatalogError
            A key that is not a field, or a value the field refuses (see the class).
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            msg = (
                f"unknown catalogue configuration keys {unknown}; expected some of {sorted(names)}"
            )
            raise CatalogError(msg)
        return cls(**data)

    @property
    def digest(self) -> str:
        """sha256 (hex) of the canonical JSON of every field."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def index_kind(self, n: int) -> str:
        """The index kind used for ``n`` vectors.

        Parameters
        ----------
        n : int
            Number of vectors (catalogue rows) the index will hold.

        Returns
        -------
        str
            ``"flat"`` up to :attr:`exact_max`, ``"ivfpq_rerank"`` above :attr:`compressed_min`,
            :attr:`approximate` between.
        """
        if n <= self.exact_max:
            return "flat"
        return "ivfpq_rerank" if n > self.compressed_min else self.approximate
