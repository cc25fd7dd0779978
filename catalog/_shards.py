"""Vector shards: a segment's float32 vectors cut into objects of bounded size, read by row.

A segment's vectors are stored row-major, little-endian float32, in shards of at most
:attr:`catalog.CatalogConfig.shard_rows` rows (``segments/000001/vectors.f32`` when one shard
holds them all, as small catalogues always had; ``segments/000001/vectors/00000.f32``, ... when
there are more). The manifest lists every shard with its first row, row count, size and sha256,
so a reader fetches exactly the byte ranges of the rows it needs: a query re-ranking its
candidates reads those rows and nothing else, from a local folder (memory-mapped, one gather per
shard) or from S3 (the rows of a shard coalesced into runs, one range request per run, the
requests concurrent).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from catalog.errors import (
    CatalogError,
    CorruptCatalogError,
    ShardReadError,
    missing_part,
    read_failed,
)
from hubcat.errors import StorageError, StoreNotFoundError
from hubcat.storage import LocalObjectStore, ObjectStore

__all__ = ["VectorRows", "segment_shards", "write_vector_shards"]


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
    """Reads rows of a catalogue's stored vectors, shard by shard.

    In a local folder every shard is memory-mapped and the rows of one shard are gathered with
    one fancy index (in row order); in a remote store (S3) the wanted rows of each shard are
    coalesced into runs and each run is one range request, the requests in flight concurrently.
    Either way only the wanted rows are read (plus, remotely, the rows inside gaps of at most
    ``gap_rows`` rows between two wanted ones).

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
    gap_rows : int
        Two wanted rows of a shard at most this many unwanted rows apart are fetched by one
        range request (0: only adjacent rows share a request, so no unwanted byte is read).
    memmap : bool, optional
        Memory-map the shards (default: when ``store`` is a local folder).
    on_read : callable, optional
        Called with the number of bytes of every range read or gathered (for accounting).
    """

    def __init__(
        self,
        store: ObjectStore,
        segments: list[dict],
        dim: int,
        *,
        threads: int = 16,
        gap_rows: int = 0,
        memmap: bool | None = None,
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        if gap_rows < 0 or threads < 1:
            msg = f"gap_rows={gap_rows} must be >= 0 and threads={threads} >= 1"
            raise CatalogError(msg)
        self.store = store
        self.dim = int(dim)
        self.shards = [s for seg in segments for s in segment_shards(seg)]
        self._starts = np.array([int(s["first_row"]) for s in self.shards], dtype=np.int64)
        self._ends = self._starts + np.array([int(s["rows"]) for s in self.shards], np.int64)
        self.total = int(self._ends[-1]) if self.shards else 0
        self.threads = int(threads)
        self.gap_rows = int(gap_rows)
        self.memmap = isinstance(store, LocalObjectStore) if memmap is None else bool(memmap)
        self.on_read = on_read
        self._maps: dict[int, tuple[tuple[int, int, int], np.ndarray]] = {}

    # -- errors -----------------------------------------------------------------------------
    def _missing(self, shard: dict) -> CorruptCatalogError:
        rows = f"rows {shard['first_row']}..{shard['first_row'] + shard['rows'] - 1}"
        return missing_part(
            f"vector shard {shard['key']} ({rows})",
            f"catalogue {self.store.uri}",
            "the catalogue is incomplete: restore the object or rebuild the catalogue with "
            "`hubcat build`",
        )

    def _failed(self, shard: dict, exc: Exception) -> ShardReadError:
        return read_failed(f"vector shard {shard['key']}", f"catalogue {self.store.uri}", exc)

    # -- remote: one range request per run --------------------------------------------------
    def _fetch(self, shard: dict, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` (shard-relative) of ``shard`` by one range read; errors name the shard."""
        row_bytes = 4 * self.dim
        key = shard["key"]
        try:
            data = self.store.get_range(key, lo * row_bytes, (hi - lo) * row_bytes)
        except StoreNotFoundError:
            raise self._missing(shard) from None
        except StorageError as exc:
            raise self._failed(shard, exc) from exc
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

    # -- local: memory-mapped shards --------------------------------------------------------
    def _mapped(self, s: int) -> np.ndarray:
        """Shard ``s`` memory-mapped, after checking that the file is there and whole.

        The file is looked at (``stat``) on every call: a shard replaced since it was mapped is
        mapped again, and one that was deleted or cut short is refused by name before any page
        of it is touched.
        """
        shard = self.shards[s]
        row_bytes = 4 * self.dim
        path = self.store.root / shard["key"]
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise self._missing(shard) from None
        except OSError as exc:
            raise self._failed(shard, exc) from exc
        want = int(shard["rows"]) * row_bytes
        if st.st_size != want:
            how = "truncated" if st.st_size < want else "longer than its manifest entry"
            msg = (
                f"vector shard {shard['key']} of catalogue {self.store.uri} is {how}: "
                f"{st.st_size} bytes, the manifest records {shard['rows']} rows of {row_bytes} "
                f"bytes ({want}); run `hubcat verify` and rebuild"
            )
            raise CorruptCatalogError(msg)
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        got = self._maps.get(s)
        if got is None or got[0] != stamp:
            try:
                mm = np.memmap(path, dtype="<f4", mode="r", shape=(int(shard["rows"]), self.dim))
            except (OSError, ValueError) as exc:
                raise self._failed(shard, exc) from exc
            self._maps[s] = got = (stamp, mm)
        return got[1]

    # -- planning ---------------------------------------------------------------------------
    def _plan(self, uniq: np.ndarray) -> list[tuple[int, int, int]]:
        """Runs ``(shard, first, last + 1)`` over positions of sorted unique rows ``uniq``.

        A run holds rows of one shard whose neighbours are at most ``gap_rows`` rows apart.
        """
        if not len(uniq):
            return []
        shard_of = np.searchsorted(self._ends, uniq, side="right")
        cut = np.flatnonzero((np.diff(shard_of) != 0) | (np.diff(uniq) > self.gap_rows + 1)) + 1
        bounds = np.concatenate([[0], cut, [len(uniq)]])
        return [(int(shard_of[a]), int(a), int(b)) for a, b in itertools.pairwise(bounds)]

    def read_plan(self, ids: np.ndarray) -> list[tuple[str, int, int]]:
        """The range requests a remote read of rows ``ids`` makes: ``(key, start byte, length)``.

        Parameters
        ----------
        ids : numpy.ndarray of int
            Catalogue rows, each in ``[0, total)``.

        Returns
        -------
        list of (str, int, int)
            One entry per request, in shard and row order.
        """
        uniq = np.unique(np.asarray(ids, dtype=np.int64).ravel())
        row_bytes = 4 * self.dim
        out = []
        for s, a, b in self._plan(uniq):
            lo = int(uniq[a] - self._starts[s])
            hi = int(uniq[b - 1] - self._starts[s]) + 1
            out.append((self.shards[s]["key"], lo * row_bytes, (hi - lo) * row_bytes))
        return out

    # -- reading ----------------------------------------------------------------------------
    def unique_rows(self, uniq: np.ndarray) -> np.ndarray:
        """The stored vectors of sorted, unique catalogue rows ``uniq`` (one gather).

        Parameters
        ----------
        uniq : numpy.ndarray of int64
            Sorted unique rows in ``[0, total)``.

        Returns
        -------
        numpy.ndarray, float32, shape (len(uniq), D)

        Raises
        ------
        CorruptCatalogError
            A shard is missing or not the size the manifest says (the message names it).
        ShardReadError
            The store failed while reading (the message names the shard).
        """
        got = np.empty((len(uniq), self.dim), dtype=np.float32)
        if not len(uniq):
            return got
        if uniq[0] < 0 or uniq[-1] >= self.total:
            msg = f"rows {uniq[0]}..{uniq[-1]} are outside the catalogue's {self.total} rows"
            raise CorruptCatalogError(msg)
        if self.memmap:
            shard_of = np.searchsorted(self._ends, uniq, side="right")
            cut = np.flatnonzero(np.diff(shard_of)) + 1
            for a, b in itertools.pairwise(np.r_[0, cut, len(uniq)]):
                s = int(shard_of[a])
                mm = self._mapped(s)
                try:
                    got[a:b] = mm[uniq[a:b] - self._starts[s]]
                except OSError as exc:  # pragma: no cover - an I/O error under the mapping
                    raise self._failed(self.shards[s], exc) from exc
                if self.on_read is not None:
                    self.on_read(int(b - a) * 4 * self.dim)
            return got
        runs = self._plan(uniq)

        def one(run: tuple[int, int, int]) -> None:
            s, a, b = run
            lo = int(uniq[a] - self._starts[s])
            block = self._fetch(self.shards[s], lo, int(uniq[b - 1] - self._starts[s]) + 1)
            got[a:b] = block[uniq[a:b] - self._starts[s] - lo]

        if len(runs) == 1 or self.threads <= 1:
            for run in runs:
                one(run)
        else:
            with ThreadPoolExecutor(min(self.threads, len(runs))) as pool:
                list(pool.map(one, runs))  # the first failure is raised here
        return got

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
        if not len(ids):
            return np.empty((0, self.dim), dtype=np.float32)
        if ids.min() < 0 or ids.max() >= self.total:
            msg = f"rows {ids.min()}..{ids.max()} are outside the catalogue's {self.total} rows"
            raise CorruptCatalogError(msg)
        uniq, inverse = np.unique(ids, return_inverse=True)
        return self.unique_rows(uniq)[inverse]

    def shard(self, i: int) -> np.ndarray:
        """Every row of shard ``i`` (one read)."""
        shard = self.shards[i]
        if self.memmap:
            return np.array(self._mapped(i))
        return self._fetch(shard, 0, int(shard["rows"]))
