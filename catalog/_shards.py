"""Vector shards: a segment's float32 vectors cut into objects of bounded size, read by row.

A segment's vectors are stored row-major, little-endian float32, in shards of at most
:attr:`catalog.CatalogConfig.shard_rows` rows (``segments/000001/vectors.f32`` when one shard
holds them all, as small catalogues always had; ``segments/000001/vectors/00000.f32``, ... when
there are more). The manifest lists every shard with its first row, row count, size and sha256,
so a reader fetches exactly the byte ranges of the rows it needs: a query re-ranking its
candidates reads those rows and nothing else, from a local folder or from S3.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from catalog.errors import CorruptCatalogError, ShardReadError
from hubcat.errors import StorageError, StoreNotFoundError
from hubcat.storage import ObjectStore

__all__ = ["VectorRows", "segment_shards", "write_vector_shards"]

#: Rows further apart than this are fetched by separate range requests (adjacent rows: one).
_GAP_ROWS = 1


def write_vector_shards(
    store: ObjectStore, prefix: str, vectors: np.ndarray, shard_rows: int, first_row: int
) -> list[dict]:
    """Write ``vectors`` under ``prefix`` in shards of at most ``shard_rows`` rows.

    Parameters
    ----------
    store : ObjectStore
    prefix : str
        The segment's key prefix, e.g. ``segments/000002``.
    vectors : numpy.ndarray, float32, shape (n, D)
    shard_rows : int
        Largest number of rows in one shard.
    first_row : int
        Catalogue row of ``vectors[0]``.

    Returns
    -------
    list of dict
        One entry per shard: ``key``, ``first_row`` (catalogue row), ``rows``, ``bytes``,
        ``sha256``.
    """
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    n = len(vectors)
    starts = list(range(0, n, shard_rows)) or [0]
    single = len(starts) == 1
    out = []
    for i, start in enumerate(starts):
        data = vectors[start : start + shard_rows].tobytes()
        key = f"{prefix}/vectors.f32" if single else f"{prefix}/vectors/{i:05d}.f32"
        store.put(key, data)
        out.append(
            {
                "key": key,
                "first_row": first_row + start,
                "rows": min(shard_rows, n - start),
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    return out


def segment_shards(segment: dict) -> list[dict]:
    """The vector shards of a manifest segment (one shard for segments written before shards)."""
    if "vector_shards" in segment:
        return list(segment["vector_shards"])
    return [
        {
            "key": segment["vectors_key"],
            "first_row": int(segment.get("first_row", 0)),
            "rows": int(segment["rows"]),
            "sha256": segment["vectors_sha256"],
        }
    ]


class VectorRows:
    """Reads rows of a catalogue's stored vectors by byte range, shard by shard.

    Parameters
    ----------
    store : ObjectStore
        The catalogue's root.
    segments : list of dict
        The manifest's ``segments``.
    dim : int
        Vector dimension.
    threads : int
        Range requests in flight at once (remote stores answer each in milliseconds).
    on_read : callable, optional
        Called with the number of bytes of every range read (for accounting).
    """

    def __init__(
        self,
        store: ObjectStore,
        segments: list[dict],
        dim: int,
        *,
        threads: int = 16,
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.dim = int(dim)
        self.shards = [s for seg in segments for s in segment_shards(seg)]
        self._starts = np.array([int(s["first_row"]) for s in self.shards], dtype=np.int64)
        self._ends = self._starts + np.array([int(s["rows"]) for s in self.shards], np.int64)
        self.total = int(self._ends[-1]) if self.shards else 0
        self.threads = threads
        self.on_read = on_read

    def _fetch(self, shard: dict, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` (shard-relative) of ``shard``; errors name the shard."""
        row_bytes = 4 * self.dim
        key = shard["key"]
        try:
            data = self.store.get_range(key, lo * row_bytes, (hi - lo) * row_bytes)
        except StoreNotFoundError:
            msg = (
                f"vector shard {key} of catalogue {self.store.uri} is missing (rows "
                f"{shard['first_row']}..{shard['first_row'] + shard['rows'] - 1}); the catalogue "
                "is incomplete: restore the object or rebuild the catalogue with `hubcat build`"
            )
            raise CorruptCatalogError(msg) from None
        except StorageError as exc:
            msg = (
                f"reading vector shard {key} of catalogue {self.store.uri} failed ({exc}); "
                "the query was not answered: retry it when the store is reachable"
            )
            raise ShardReadError(msg) from exc
        if len(data) != (hi - lo) * row_bytes:
            msg = (
                f"vector shard {key} of catalogue {self.store.uri} is truncated: rows {lo}..{hi - 1} "
                f"need {(hi - lo) * row_bytes} bytes from offset {lo * row_bytes}, got {len(data)} "
                f"(the manifest records {shard['rows']} rows); run `hubcat verify` and rebuild"
            )
            raise CorruptCatalogError(msg)
        if self.on_read is not None:
            self.on_read(len(data))
        return np.frombuffer(data, dtype="<f4").reshape(hi - lo, self.dim)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of catalogue rows ``ids`` (any order, repeats allowed).

        Parameters
        ----------
        ids : numpy.ndarray of int
            Catalogue rows, each in ``[0, total)``.

        Returns
        -------
        numpy.ndarray, float32, shape (len(ids), D)

        Raises
        ------
        CorruptCatalogError
            A shard is missing or shorter than the manifest says (the message names it).
        ShardReadError
            The store failed while reading (the message names the shard).
        """
        ids = np.asarray(ids, dtype=np.int64).ravel()
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        if not len(ids):
            return out
        if ids.min() < 0 or ids.max() >= self.total:
            msg = f"rows {ids.min()}..{ids.max()} are outside the catalogue's {self.total} rows"
            raise CorruptCatalogError(msg)
        uniq, inverse = np.unique(ids, return_inverse=True)
        shard_of = np.searchsorted(self._ends, uniq, side="right")
        runs = []  # (shard index, first unique position, shard-relative lo, hi)
        i = 0
        while i < len(uniq):
            s = int(shard_of[i])
            j = i
            while j + 1 < len(uniq) and shard_of[j + 1] == s and uniq[j + 1] - uniq[j] <= _GAP_ROWS:
                j += 1
            base = int(self._starts[s])
            runs.append((s, i, j, int(uniq[i]) - base, int(uniq[j]) - base + 1))
            i = j + 1
        got = np.empty((len(uniq), self.dim), dtype=np.float32)

        def one(run):
            s, i0, i1, lo, hi = run
            block = self._fetch(self.shards[s], lo, hi)
            rel = uniq[i0 : i1 + 1] - int(self._starts[s]) - lo
            got[i0 : i1 + 1] = block[rel]

        if len(runs) == 1 or self.threads <= 1:
            for run in runs:
                one(run)
        else:
            with ThreadPoolExecutor(min(self.threads, len(runs))) as pool:
                list(pool.map(one, runs))
        out[:] = got[inverse]
        return out

    def shard(self, i: int) -> np.ndarray:
        """Every row of shard ``i`` (one read)."""
        shard = self.shards[i]
        return self._fetch(shard, 0, int(shard["rows"]))
