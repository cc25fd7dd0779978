"""Metadata shards: a segment's rows sorted by sky position, in parquet files of bounded size.

A segment's metadata is written as ``segments/<NNNNNN>/metadata/<NNNNN>.parquet``, each file at
most :attr:`catalog.CatalogConfig.metadata_shard_rows` rows, its rows sorted by the nested
HEALPix index (order :data:`HEALPIX_ORDER`, computed with ``astropy-healpix``) of the tile
centre, in parquet row groups of at most :attr:`catalog.CatalogConfig.row_group_rows` rows. The
manifest lists every shard (key, rows, bytes, sha256) and, per row group, its row count and
HEALPix min/max. A cone search turns the cone into ranges of HEALPix indexes (the library's cone
query at a coarser order: every pixel the cone overlaps) and reads only the row groups whose range
meets them, by byte range, from a local folder or from S3. Reading a whole segment checks every
shard's sha256; a partial read checks the shard's size and the parquet page checksums.

Segments written before shards (one ``metadata.parquet``, ``metadata_key`` in the manifest)
are read whole, as before; a cone search over them scans the table.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from astropy import units as u

from catalog.errors import CatalogError, CorruptCatalogError, read_failed, reading
from hubcat.errors import StorageError
from hubcat.storage import ObjectStore

__all__ = [
    "HEALPIX_COLUMN",
    "HEALPIX_ORDER",
    "cone_ranges",
    "healpix_index",
    "is_sharded",
    "read_cone_candidates",
    "read_segment_metadata",
    "superseded_rows",
    "write_metadata_shards",
]

#: Order of the nested HEALPix index that sorts the rows (nside 2**20: pixels of ~0.2 arcsec).
HEALPIX_ORDER = 20
#: Name of the column holding that index in the shard files (not part of ``metadata()``).
HEALPIX_COLUMN = "healpix"


def _healpix(order: int):
    """``astropy_healpix.HEALPix`` of ``order``, nested (imported on first use)."""
    try:
        from astropy_healpix import HEALPix
    except ImportError:
        msg = (
            "astropy-healpix is needed to write or cone-search catalogue metadata (rows are "
            "sorted by HEALPix index); install it with `pip install astropy-healpix`"
        )
        raise CatalogError(msg) from None
    return HEALPix(nside=2**order, order="nested")


#: Columns whose min/max each row group records (long text statistics only swell the footer).
_STATISTICS = [HEALPIX_COLUMN, "leaf_index", "ra", "dec", "zoom", "date_obs"]
#: Parquet footers of shards already opened, by (store, key, sha256): a shard never changes.
_FOOTERS: dict[tuple[str, str, str], pq.FileMetaData] = {}
_FOOTERS_MAX = 64
_INCOMPLETE = "the catalogue is incomplete: copy it whole, or rebuild it with `hubcat build`"


def healpix_index(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """Nested HEALPix index at :data:`HEALPIX_ORDER` of ICRS positions in degrees.

    Parameters
    ----------
    ra_deg, dec_deg : numpy.ndarray
        float [N], degrees.

    Returns
    -------
    numpy.ndarray
        int64 [N].
    """
    ra = np.asarray(ra_deg, dtype=float) * u.deg
    dec = np.asarray(dec_deg, dtype=float) * u.deg
    return np.asarray(_healpix(HEALPIX_ORDER).lonlat_to_healpix(ra, dec), dtype=np.int64)


def cone_ranges(ra_deg: float, dec_deg: float, radius: u.Quantity) -> np.ndarray:
    """Half-open ranges ``[lo, hi)`` of fine HEALPix indexes that cover a cone.

    The cone is queried with ``astropy_healpix.HEALPix.cone_search_lonlat`` (which returns every
    pixel the cone overlaps, even partly) at the finest order whose pixels are at least as large
    as ``radius`` (a handful of pixels); each coarse pixel is then the range of its fine
    descendants.

    Parameters
    ----------
    ra_deg, dec_deg : float
        Centre, ICRS degrees.
    radius : astropy.units.Quantity
        Angular radius.

    Returns
    -------
    numpy.ndarray
        int64 [K, 2], sorted and merged ranges.
    """
    r = float(radius.to_value(u.deg))
    order = HEALPIX_ORDER
    while order > 0 and _healpix(order).pixel_resolution.to_value(u.deg) < r:
        order -= 1
    coarse = _healpix(order)
    if r >= 180.0:
        return np.array([[0, 12 * 4**HEALPIX_ORDER]], dtype=np.int64)
    # documented to return every pixel that overlaps the cone, even partly
    pix = np.sort(
        np.asarray(coarse.cone_search_lonlat(ra_deg * u.deg, dec_deg * u.deg, r * u.deg), np.int64)
    )
    shift = 2 * (HEALPIX_ORDER - order)
    out: list[list[int]] = []
    for p in pix.tolist():
        lo, hi = p << shift, (p + 1) << shift
        if out and out[-1][1] == lo:
            out[-1][1] = hi
        else:
            out.append([lo, hi])
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def write_metadata_shards(
    store: ObjectStore, prefix: str, meta: pd.DataFrame, shard_rows: int, row_group_rows: int
) -> dict:
    """Write ``meta`` under ``prefix`` sorted by HEALPix index, in bounded shards and row groups.

    Parameters
    ----------
    store : ObjectStore
    prefix : str
        The segment's key prefix, e.g. ``segments/000002``.
    meta : pandas.DataFrame
        The segment's rows, in leaf order, with ``ra``, ``dec`` (degrees) and ``leaf_index``.
    shard_rows : int
        Largest number of rows in one shard file.
    row_group_rows : int
        Largest number of rows in one parquet row group.

    Returns
    -------
    dict
        The segment's manifest fields: ``metadata_layout`` (the HEALPix scheme and sizes),
        ``metadata_shards`` (per shard ``key``, ``rows``, ``bytes``, ``sha256``, ``healpix_min``,
        ``healpix_max`` and ``row_groups``: per group ``rows``, ``healpix_min``,
        ``healpix_max``) and ``superseding`` (rows that replace an earlier row).
    """
    import hashlib

    hp = healpix_index(meta["ra"].to_numpy(float), meta["dec"].to_numpy(float))
    order = np.argsort(hp, kind="stable")
    sorted_meta = meta.iloc[order].reset_index(drop=True)
    sorted_meta[HEALPIX_COLUMN] = hp[order]
    shards = []
    for i, start in enumerate(range(0, len(sorted_meta), shard_rows)):
        part = sorted_meta.iloc[start : start + shard_rows]
        buf = io.BytesIO()
        pq.write_table(
            pa.Table.from_pandas(part, preserve_index=False),
            buf,
            row_group_size=row_group_rows,
            write_page_checksum=True,
            write_statistics=_STATISTICS,
        )
        data = buf.getvalue()
        key = f"{prefix}/metadata/{i:05d}.parquet"
        store.put(key, data)
        values = part[HEALPIX_COLUMN].to_numpy()
        groups = [
            {
                "rows": len(values[g : g + row_group_rows]),
                "healpix_min": int(values[g]),
                "healpix_max": int(values[g : g + row_group_rows][-1]),
            }
            for g in range(0, len(values), row_group_rows)
        ]
        shards.append(
            {
                "key": key,
                "rows": len(part),
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "healpix_min": int(values[0]),
                "healpix_max": int(values[-1]),
                "row_groups": groups,
            }
        )
    superseding = 0
    if "supersedes" in meta.columns:
        superseding = int((pd.to_numeric(meta["supersedes"], errors="coerce") >= 0).sum())
    return {
        "metadata_layout": {
            "scheme": "healpix-nested",
            "order": HEALPIX_ORDER,
            "column": HEALPIX_COLUMN,
            "frame": "icrs",
            "sorted_by": [HEALPIX_COLUMN, "leaf_index"],
            "shard_rows": int(shard_rows),
            "row_group_rows": int(row_group_rows),
        },
        "metadata_shards": shards,
        "superseding": superseding,
    }


def is_sharded(segments: Sequence[dict]) -> bool:
    """Whether every segment stores its metadata in HEALPix-sorted shards."""
    return bool(segments) and all("metadata_shards" in s for s in segments)


ReadChecked = Callable[[str, str, str], bytes]


def read_segment_metadata(seg: dict, read_checked: ReadChecked) -> pd.DataFrame:
    """The whole metadata of one segment, in leaf order, every object's sha256 checked.

    Parameters
    ----------
    seg : dict
        The segment's manifest entry (sharded or the older single ``metadata_key``).
    read_checked : callable
        ``(key, sha256, what) -> bytes`` that raises :class:`CorruptCatalogError` naming a
        missing or altered object (``Catalogue._read_checked``).

    Returns
    -------
    pandas.DataFrame
        Without the HEALPix column.

    Raises
    ------
    CorruptCatalogError
        A shard is missing, altered, truncated or holds another row count than the manifest.
    """
    if "metadata_shards" not in seg:
        return pd.read_parquet(
            io.BytesIO(read_checked(seg["metadata_key"], seg["metadata_sha256"], "metadata"))
        )
    parts = []
    for shard in seg["metadata_shards"]:
        data = read_checked(shard["key"], shard["sha256"], "metadata")
        part = pd.read_parquet(io.BytesIO(data))
        if len(part) != int(shard["rows"]):
            msg = f"metadata shard {shard['key']} holds {len(part)} rows, the manifest {shard['rows']}"
            raise CorruptCatalogError(msg)
        parts.append(part)
    meta = pd.concat(parts, ignore_index=True)
    meta = meta.sort_values("leaf_index", kind="stable").reset_index(drop=True)
    return meta.drop(columns=[HEALPIX_COLUMN], errors="ignore")


class _RangeFile(io.RawIOBase):
    """A read-only file over one stored object, read by byte range (what pyarrow seeks in)."""

    def __init__(self, store: ObjectStore, key: str, size: int) -> None:
        self._store, self._key, self._size, self._pos = store, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._size - self._pos
        n = max(0, min(n, self._size - self._pos))
        if n == 0:
            return b""
        data = self._store.get_range(self._key, self._pos, n)
        self._pos += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _open_shard(store: ObjectStore, shard: dict, where: str) -> pq.ParquetFile:
    key = shard["key"]
    with reading(f"metadata shard {key}", where, _INCOMPLETE):
        size = store.size(key)
    if size != int(shard["bytes"]):
        msg = (
            f"metadata shard {key} of {where} is {size} bytes, its manifest records "
            f"{shard['bytes']}: it is truncated or was changed. Rebuild the catalogue with `hubcat build`"
        )
        raise CorruptCatalogError(msg)
    try:
        cache_key = (store.uri, key, shard["sha256"])
        metadata = _FOOTERS.get(cache_key)
        if metadata is None:
            # the footer's length, then the footer (pyarrow alone would fetch the last 64 KiB)
            tail = store.get_range(key, max(0, size - 8), min(size, 8))
            footer = int.from_bytes(tail[:4], "little") + 8 if len(tail) == 8 else size + 1
            if footer > size - 4 or tail[4:] != b"PAR1":
                msg = f"metadata shard {key} of {where} has no valid parquet footer: it is damaged"
                raise CorruptCatalogError(msg)
            data = store.get_range(key, size - footer, footer - 8) + tail
            metadata = pq.read_metadata(io.BytesIO(b"PAR1" + data))
            if len(_FOOTERS) >= _FOOTERS_MAX:
                _FOOTERS.pop(next(iter(_FOOTERS)))
            _FOOTERS[cache_key] = metadata
        return pq.ParquetFile(
            _RangeFile(store, key, size), metadata=metadata, page_checksum_verification=True
        )
    except StorageError as exc:
        raise read_failed(f"metadata shard {key}", where, exc) from exc
    except (OSError, pa.ArrowException) as exc:
        msg = f"metadata shard {key} of {where} is not a readable parquet file ({exc}); rebuild the catalogue"
        raise CorruptCatalogError(msg) from None


def read_cone_candidates(
    store: ObjectStore, segments: Sequence[dict], ranges: np.ndarray, where: str
) -> tuple[pd.DataFrame, int]:
    """The rows of the row groups whose HEALPix range meets ``ranges`` (and no others).

    Parameters
    ----------
    store : ObjectStore
    segments : sequence of dict
        Sharded segment entries of the manifest (:func:`is_sharded`).
    ranges : numpy.ndarray
        int64 [K, 2] sorted half-open ranges of fine HEALPix indexes (:func:`cone_ranges`).
    where : str
        The catalogue, for messages.

    Returns
    -------
    (pandas.DataFrame, int)
        The candidate rows (with ``leaf_index``; without the HEALPix column, in no particular
        order) and the number of row groups read.

    Raises
    ------
    CorruptCatalogError
        A shard the manifest names is missing, truncated, or fails its page checksums.
    ShardReadError
        The store failed while reading a shard (e.g. an S3 error): nothing changed, retry.
    """
    lo, hi = ranges[:, 0], ranges[:, 1]
    parts, groups_read = [], 0
    for seg in segments:
        for shard in seg["metadata_shards"]:
            wanted = [
                g
                for g, group in enumerate(shard["row_groups"])
                if _meets(int(group["healpix_min"]), int(group["healpix_max"]), lo, hi)
            ]
            if not wanted:
                continue
            pf = _open_shard(store, shard, where)
            try:
                part = pf.read_row_groups(wanted).to_pandas()
            except StorageError as exc:
                raise read_failed(f"metadata shard {shard['key']}", where, exc) from exc
            except (OSError, pa.ArrowException) as exc:
                msg = f"metadata shard {shard['key']} of {where} cannot be read ({exc}); rebuild the catalogue"
                raise CorruptCatalogError(msg) from None
            parts.append(part)
            groups_read += len(wanted)
    if not parts:  # no row group can match: an empty table with the shards' columns
        first = next(s for seg in segments for s in seg["metadata_shards"])
        parts.append(_open_shard(store, first, where).schema_arrow.empty_table().to_pandas())
    meta = pd.concat(parts, ignore_index=True)
    return meta.drop(columns=[HEALPIX_COLUMN], errors="ignore"), groups_read


def _meets(gmin: int, gmax: int, lo: np.ndarray, hi: np.ndarray) -> bool:
    """Whether ``[gmin, gmax]`` meets any of the sorted half-open ranges ``[lo, hi)``."""
    i = int(np.searchsorted(hi, gmin, side="right"))  # first range ending after gmin
    return i < len(lo) and int(lo[i]) <= gmax


def superseded_rows(store: ObjectStore, segments: Sequence[dict], where: str) -> np.ndarray:
    """Leaf indexes that a later row supersedes, reading only the ``supersedes`` column.

    Parameters
    ----------
    store : ObjectStore
    segments : sequence of dict
        Sharded segment entries; only those recording ``superseding`` rows are read.
    where : str
        The catalogue, for messages.

    Returns
    -------
    numpy.ndarray
        int64 [M], sorted.
    """
    out = []
    for seg in segments:
        if not int(seg.get("superseding", 0)):
            continue
        for shard in seg["metadata_shards"]:
            pf = _open_shard(store, shard, where)
            col = pf.read(columns=["supersedes"]).column(0).to_numpy(zero_copy_only=False)
            out.append(col[col >= 0].astype(np.int64))
    return np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)
