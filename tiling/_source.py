"""Open a mosaic source (local path or ``s3://`` URI) without ever loading it whole.

A source is read through :mod:`hubcat.storage`: a local uncompressed FITS is read with
positioned reads of the rows a block needs (see :class:`PixelReader` for why not a memory map); an
object in S3 is read with ranged GETs (:class:`RangeFile` gives astropy a seekable file over
:meth:`ObjectStore.get_range`, and :class:`PixelReader` fetches pixel rows directly); a gzipped
FITS (local or remote) has no random access, so it is decompressed once, streaming, into a
temporary file that is then read like a local one. Every path reads in bounded pieces, so memory does not
grow with the size of the mosaic.

This module also picks the image HDUs of a product (SCI extensions of ``_drz``/``_drc`` files,
each band of a multi-extension cutout, a single primary image), finds the matching footprint
extension (WHT, else CTX), and refuses inputs that are not rectified mosaics.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tempfile
import threading
import warnings
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hubcat.errors import StoreNotFoundError
from hubcat.storage import ObjectStore, is_remote_uri, open_object_store
from tiling._plan import (
    ImagePlan,
)
from tiling.errors import SourceError, SourceNotFoundError

__all__ = ["ImagePlan", "PixelReader", "RangeFile", "Source", "open_source"]

_HASH_PIECE = 8 << 20
_BITPIX = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


class RangeFile(io.RawIOBase):
    """A read-only, seekable file over one object of an :class:`ObjectStore`.

    Reads go through :meth:`ObjectStore.get_range` in aligned blocks of ``block_size`` bytes,
    of which the last ``cache_blocks`` are cached, so astropy's many small header reads cost a
    few requests. Memory is bounded by ``block_size * cache_blocks``.

    Parameters
    ----------
    store : ObjectStore
        The store holding the object.
    key : str
        The object's key; its size is read once, on construction.
    block_size : int
        Bytes per ranged read (1 MiB by default); reads over four blocks bypass the cache.
    cache_blocks : int
        Number of most recently used blocks kept in memory.

    Raises
    ------
    StoreNotFoundError
        If ``key`` does not exist in ``store``.
    """

    def __init__(
        self, store: ObjectStore, key: str, *, block_size: int = 1 << 20, cache_blocks: int = 8
    ) -> None:
        super().__init__()
        self._store, self._key = store, key
        self._size = store.size(key)
        self._pos = 0
        self._block = block_size
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_blocks = cache_blocks
        self._lock = threading.Lock()
        self.name = f"{store.uri.rstrip('/')}/{key}"
        self.mode = "rb"

    def readable(self) -> bool:
        """Whether the file can be read.

        Returns
        -------
        bool
            Always True.
        """
        return True

    def seekable(self) -> bool:
        """Whether the file supports :meth:`seek`.

        Returns
        -------
        bool
            Always True.
        """
        return True

    def tell(self) -> int:
        """The current position.

        Returns
        -------
        int
            Offset in bytes from the start of the object.
        """
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position (no request is made).

        Parameters
        ----------
        offset : int
            Bytes relative to ``whence``.
        whence : int
            ``io.SEEK_SET`` (start), ``io.SEEK_CUR`` (current position) or ``io.SEEK_END``
            (end of the object).

        Returns
        -------
        int
            The new position; a position before the start is clamped to 0.

        Raises
        ------
        KeyError
            If ``whence`` is not one of the three ``io.SEEK_*`` values.
        """
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _get_block(self, index: int) -> bytes:
        with self._lock:
            if index in self._cache:
                self._cache.move_to_end(index)
                return self._cache[index]
        data = self._store.get_range(self._key, index * self._block, self._block)
        with self._lock:
            self._cache[index] = data
            while len(self._cache) > self._cache_blocks:
                self._cache.popitem(last=False)
        return data

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes from the current position and advance it.

        Parameters
        ----------
        size : int
            Bytes wanted; negative or None reads to the end of the object.

        Returns
        -------
        bytes
            Fewer than ``size`` bytes at the end of the object, empty past it.

        Raises
        ------
        StorageError
            If a ranged read of the object fails.
        """
        if size is None or size < 0:
            size = self._size - self._pos
        size = max(0, min(size, self._size - self._pos))
        if size > 4 * self._block:  # large reads bypass the cache
            data = self._store.get_range(self._key, self._pos, size)
            self._pos += len(data)
            return data
        out = bytearray()
        while len(out) < size:
            index, offset = divmod(self._pos, self._block)
            chunk = self._get_block(index)[offset : offset + size - len(out)]
            if not chunk:
                break
            out += chunk
            self._pos += len(chunk)
        return bytes(out)

    def readinto(self, buffer) -> int:  # type: ignore[override]
        """Read up to ``len(buffer)`` bytes into ``buffer``.

        Parameters
        ----------
        buffer : writable bytes-like
            Where the bytes go (a ``bytearray`` or ``memoryview``).

        Returns
        -------
        int
            Number of bytes read; 0 at the end of the object.
        """
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@dataclass
class Source:
    """A source opened for reading: where it is, its content hash, how to read its bytes.

    Use as a context manager; :meth:`close` removes any temporary decompressed copy.
    """

    uri: str
    name: str
    store: ObjectStore
    key: str
    size: int
    gzip: bool
    sha256: str = ""
    local_path: Path | None = None
    _tmpdir: str | None = field(default=None, repr=False)

    @property
    def remote(self) -> bool:
        """Whether pixels are read with ranged requests (no local file)."""
        return self.local_path is None

    def fileobj(self):
        """A binary file object of the (decompressed) FITS bytes."""
        if self.local_path is not None:
            return open(self.local_path, "rb")
        return RangeFile(self.store, self.key)

    def close(self) -> None:
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _split_uri(source: str | os.PathLike[str]) -> tuple[str, ObjectStore, str]:
    text = str(source)
    if is_remote_uri(text):
        base, _, key = text.rstrip("/").rpartition("/")
        if not key or base in ("s3:", "s3:/"):
            msg = "expected s3://bucket/key/to/file.fits, a key inside a bucket"
            raise SourceError(text, msg)
        return text, open_object_store(base), key
    if text.startswith("file://"):
        text = text[len("file://") :]
    path = Path(text).expanduser().absolute()
    return str(path), open_object_store(path.parent), path.name


def open_source(source: str | os.PathLike[str], *, tmpdir: str | None = None) -> Source:
    """Open ``source``, hash its bytes (streaming) and prepare random access to its pixels.

    Parameters
    ----------
    source : str or path-like
        Local path, ``file://`` URI or ``s3://bucket/key``; ``.gz`` files are decompressed to a
        temporary file (gzip has no random access).
    tmpdir : str, optional
        Where temporary decompressed copies go (default: the system temporary folder).

    Returns
    -------
    Source

    Raises
    ------
    SourceNotFoundError
        If the file or object does not exist.
    SourceError
        If it is empty or a broken gzip stream.
    """
    uri, store, key = _split_uri(source)
    try:
        size = store.size(key)
    except (StoreNotFoundError, FileNotFoundError):
        msg = "does not exist; check the path (or the bucket and key of an s3:// URI)"
        raise SourceNotFoundError(uri, msg) from None
    if size == 0:
        raise SourceError(uri, "is empty (0 bytes); re-download the file")
    head = store.get_range(key, 0, 2)
    is_gzip = head == b"\x1f\x8b"
    src = Source(
        uri=uri, name=key.rsplit("/", 1)[-1], store=store, key=key, size=size, gzip=is_gzip
    )
    digest = hashlib.sha256()
    if is_gzip:
        src._tmpdir = tempfile.mkdtemp(prefix="hubcat-src-", dir=tmpdir)
        out_path = Path(src._tmpdir) / "decompressed.fits"
        try:
            with RangeFile(store, key, block_size=_HASH_PIECE, cache_blocks=1) as raw:
                hashing = _HashingReader(raw, digest)
                with gzip.GzipFile(fileobj=hashing, mode="rb") as gz, open(out_path, "wb") as out:
                    shutil.copyfileobj(gz, out, _HASH_PIECE)
        except (OSError, EOFError, zlib.error) as exc:
            src.close()
            msg = f"is not a valid gzip stream ({exc}); re-download the file"
            raise SourceError(uri, msg) from None
        src.local_path = out_path
    else:
        for start in range(0, size, _HASH_PIECE):
            digest.update(store.get_range(key, start, _HASH_PIECE))
        if not is_remote_uri(uri):
            src.local_path = Path(uri)
    src.sha256 = digest.hexdigest()
    return src


class _HashingReader(io.RawIOBase):
    """Pass reads through while hashing every byte read (the compressed bytes as stored)."""

    def __init__(self, raw, digest) -> None:
        super().__init__()
        self._raw, self._digest = raw, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        self._digest.update(data)
        buffer[: len(data)] = data
        return len(data)


# -- pixel access -------------------------------------------------------------------------------


class PixelReader:
    """Read rectangular regions of one image HDU as float64, NaN-padded outside the image.

    Local files are read with positioned reads (``os.pread``: one per row segment, or one per
    ``rows_per_request`` whole rows); remote ones with ranged requests of whole rows (at most
    ``rows_per_request`` each, cropped to the region at once). Only the region and one
    request's rows are ever in memory. ``BSCALE``/``BZERO`` are applied and ``BLANK`` integer
    pixels become NaN. Thread-safe: every read is independent.

    Why not ``numpy.memmap``: it was measured. Every page a mapped read touches stays in the
    process's resident set, and the kernel maps 64 KiB around each faulting page
    (fault-around), so reading a 896-px-wide block maps up to 64 KiB of every row it crosses:
    the peak RSS of tiling a mapped mosaic doubled with each doubling of its width (2k -> 16k
    px), although those pages were only page cache. Positioned reads keep the RSS flat and
    cost a few microseconds per row.
    """

    def __init__(self, source: Source, header, offset: int, *, rows_per_request: int = 64) -> None:
        bitpix = int(header["BITPIX"])
        if bitpix not in _BITPIX:
            raise SourceError(source.uri, f"has unsupported BITPIX={bitpix}")
        self.dtype = np.dtype(_BITPIX[bitpix])
        self.shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
        self.bscale = float(header.get("BSCALE", 1.0))
        self.bzero = float(header.get("BZERO", 0.0))
        self.blank = header.get("BLANK") if bitpix > 0 else None
        self.offset = int(offset)
        self.source = source
        self.rows_per_request = rows_per_request
        self._fd: int | None = None
        if source.local_path is not None:
            self._fd = os.open(source.local_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def close(self) -> None:
        """Close the local file descriptor (reads after this fail)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    def _bytes(self, start: int, length: int) -> bytes:
        if self._fd is not None:
            data = os.pread(self._fd, length, start)
        else:
            data = self.source.store.get_range(self.source.key, start, length)
        if len(data) != length:
            msg = f"is truncated: expected {length} bytes at offset {start}, got {len(data)}"
            raise SourceError(self.source.uri, msg)
        return data

    def _rows(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Raw pixels ``[y0:y1, x0:x1]`` (file dtype)."""
        nx, size = self.shape[1], self.dtype.itemsize
        row_bytes = nx * size
        # narrow (under 1/8 of a row): one read per row segment; wider: whole rows, cropped
        # (a few memcpys of unused pixels cost less than one system call per row)
        if self._fd is not None and (x1 - x0) * 8 < nx:
            width = (x1 - x0) * size
            data = b"".join(
                self._bytes(self.offset + y * row_bytes + x0 * size, width) for y in range(y0, y1)
            )
            return np.frombuffer(data, dtype=self.dtype).reshape(y1 - y0, x1 - x0)
        data = self._bytes(self.offset + y0 * row_bytes, (y1 - y0) * row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape(y1 - y0, nx)[:, x0:x1]

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[y0:y1, x0:x1]`` as float64; rows/columns outside the image are NaN."""
        ny, nx = self.shape
        cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)
        inside = (cy0, cy1, cx0, cx1) == (y0, y1, x0, x1)
        out = np.empty((y1 - y0, x1 - x0)) if inside else np.full((y1 - y0, x1 - x0), np.nan)
        if cy0 >= cy1 or cx0 >= cx1:
            return out
        view = out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        for a in range(cy0, cy1, self.rows_per_request):
            b = min(cy1, a + self.rows_per_request)
            raw = self._rows(a, b, cx0, cx1)
            part = view[a - cy0 : b - cy0]
            part[...] = raw
            if self.blank is not None:
                part[raw == self.blank] = np.nan
        if self.bscale != 1.0 or self.bzero != 0.0:
            view *= self.bscale
            view += self.bzero
        return out


# -- product structure --------------------------------------------------------------------------


def open_fits(src: Source):
    """Open the FITS structure of ``src`` lazily (headers only; pixels stay on disk/remote).

    Raises
    ------
    SourceError
        If astropy cannot parse the file as FITS.
    """
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning

    fileobj = src.fileobj()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            hdul = fits.open(fileobj, memmap=False, lazy_load_hdus=False, mode="readonly")
            list(hdul)  # parse every header now, inside the warning filter
    except Exception as exc:
        fileobj.close()
        msg = f"is not a readable FITS file ({type(exc).__name__}: {exc}); check or re-download it"
        raise SourceError(src.uri, msg) from None
    return hdul, fileobj
