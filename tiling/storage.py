"""One storage abstraction for local folders and S3.

Everything hubcat persists (tile stores, result stores, catalogues, run records) goes through an
:class:`ObjectStore`, so every store works the same on a local disk and under an ``s3://`` prefix.
Keys are ``/``-separated relative paths. :func:`open_object_store` picks the implementation from a
URI and :func:`zarr_store` adapts an object store to Zarr v3.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from tiling.errors import StorageError, StoreNotFoundError

__all__ = [
    "LocalObjectStore",
    "ObjectStore",
    "S3ObjectStore",  # noqa: F822 (lazy: module __getattr__)
    "is_remote_uri",
    "open_object_store",
    "zarr_store",
]


class ObjectStore(ABC):
    """A flat key -> bytes store rooted at :attr:`uri`.

    Subclasses implement the abstract methods; a whole-object :meth:`put` must be atomic (a reader
    sees the old bytes or the new ones, never half of them).
    """

    #: Whether :meth:`put` and :meth:`delete` are allowed.
    supports_writes: bool = True

    @property
    @abstractmethod
    def uri(self) -> str:
        """URI of the store's root (``/abs/path`` or ``s3://bucket/prefix``)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Return the bytes stored under ``key``; raise :class:`StoreNotFoundError` if absent."""

    @abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Return ``length`` bytes of ``key`` from byte ``start`` (fewer at the end of the object)."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically, replacing any previous value."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key that starts with ``prefix``, in sorted order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""

    @abstractmethod
    def size(self, key: str) -> int:
        """Size of ``key`` in bytes."""

    def child(self, prefix: str) -> ObjectStore:
        """Return a store rooted at ``prefix`` below this one."""
        return open_object_store(join_uri(self.uri, prefix))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


class LocalObjectStore(ObjectStore):
    """An :class:`ObjectStore` in a local folder; keys are relative file paths."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()

    @property
    def uri(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        key = key.lstrip("/")
        path = (self.root / key) if key else self.root
        if ".." in Path(key).parts:
            msg = f"key {key!r} escapes the store at {self.root}; use a relative key without '..'"
            raise StorageError(msg)
        return path

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            msg = f"{path} does not exist"
            raise StoreNotFoundError(msg) from None
        except OSError as exc:
            msg = f"cannot read {path}: {exc}"
            raise StorageError(msg) from exc

    def get_range(self, key: str, start: int, length: int) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                fh.seek(start)
                return fh.read(length)
        except FileNotFoundError:
            msg = f"{path} does not exist"
            raise StoreNotFoundError(msg) from None

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str = "") -> Iterator[str]:
        if not self.root.exists():
            return
        keys = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(".") and name.endswith(".tmp"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, "/")
                if rel.startswith(prefix):
                    keys.append(rel)
        yield from sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            msg = f"{self._path(key)} does not exist"
            raise StoreNotFoundError(msg) from None


def __getattr__(name: str):
    # S3ObjectStore lives in tiling._s3 (which imports this module); boto3 loads only on use.
    if name == "S3ObjectStore":
        from tiling._s3 import S3ObjectStore

        return S3ObjectStore
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def is_remote_uri(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` names an object in S3 (``s3://...``)."""
    return str(uri).startswith("s3://")


def join_uri(base: str, key: str) -> str:
    """Join a store URI and a relative key."""
    key = key.strip("/")
    if not key:
        return base
    return f"{base.rstrip('/')}/{key}"


def open_object_store(uri: str | os.PathLike[str], **options: object) -> ObjectStore:
    """Open the object store at ``uri``.

    Parameters
    ----------
    uri : str or path-like
        A local path, ``file:///path`` or ``s3://bucket/prefix``.
    **options
        Passed to the S3 implementation (for example ``endpoint_url``).

    Returns
    -------
    ObjectStore
    """
    text = str(uri)
    if text.startswith("s3://"):
        from tiling._s3 import S3ObjectStore  # boto3 is only needed for S3

        return S3ObjectStore.from_uri(text, **options)
    if text.startswith("file://"):
        text = urlparse(text).path
    return LocalObjectStore(text)


def zarr_store(store: ObjectStore, *, read_only: bool = False):
    """Return a Zarr v3 store over ``store``.

    A local folder uses :class:`zarr.storage.LocalStore` directly; other stores use an adapter
    that forwards Zarr's key/value calls to the :class:`ObjectStore`.
    """
    import zarr.storage

    if isinstance(store, LocalObjectStore):
        return zarr.storage.LocalStore(store.root, read_only=read_only)
    from tiling._zarr_adapter import ObjectZarrStore

    return ObjectZarrStore(store, read_only=read_only)
