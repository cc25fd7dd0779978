"""The :class:`ObjectStore` interface: a flat key -> bytes store, and URI helpers."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator

__all__ = ["ObjectStore", "is_remote_uri", "join_uri"]


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
        """Return the bytes stored under ``key``.

        Parameters
        ----------
        key : str
            ``/``-separated key relative to the store's root.

        Returns
        -------
        bytes
            The whole object.

        Raises
        ------
        StoreNotFoundError
            If ``key`` does not exist.
        StorageError
            If the key escapes the store (``..``) or the object cannot be read.
        """

    @abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Return ``length`` bytes of ``key`` from byte ``start``.

        Parameters
        ----------
        key : str
            Key relative to the store's root.
        start : int
            Offset of the first byte, >= 0.
        length : int
            Number of bytes wanted, >= 0.

        Returns
        -------
        bytes
            At most ``length`` bytes: fewer at the end of the object, empty past it.

        Raises
        ------
        StoreNotFoundError
            If ``key`` does not exist.
        StorageError
            If the key escapes the store; for S3, also a negative range or a failed request.
        """

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically, replacing any previous value.

        Parameters
        ----------
        key : str
            Key relative to the store's root (a local store creates missing folders).
        data : bytes
            The object's new contents.

        Raises
        ------
        StorageError
            If the store is read-only or the key escapes the store; for S3, also a failed
            request (a local store raises the ``OSError`` of a failed write).
        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` exists.

        Parameters
        ----------
        key : str
            Key relative to the store's root.

        Returns
        -------
        bool
        """

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key that starts with ``prefix``, in sorted order.

        Parameters
        ----------
        prefix : str
            Plain string prefix of the keys (not a folder: ``"a/b"`` also matches ``"a/bc"``);
            ``""`` lists the whole store.

        Yields
        ------
        str
            Keys relative to the store's root. A store whose root does not exist yields nothing.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error.

        Parameters
        ----------
        key : str
            Key relative to the store's root.

        Raises
        ------
        StorageError
            If the store is read-only or the key escapes the store; for S3, also a failed
            request.
        """

    @abstractmethod
    def size(self, key: str) -> int:
        """Size of ``key`` in bytes.

        Parameters
        ----------
        key : str
            Key relative to the store's root.

        Returns
        -------
        int
            Size of the object in bytes.

        Raises
        ------
        StoreNotFoundError
            If ``key`` does not exist.
        """

    def child(self, prefix: str) -> ObjectStore:
        """Return a store rooted at ``prefix`` below this one.

        Parameters
        ----------
        prefix : str
            Key prefix that becomes the new store's root.

        Returns
        -------
        ObjectStore
            A store whose key ``k`` is this store's key ``prefix/k``.
        """
        from hubcat.storage import open_object_store  # the factory knows every implementation

        return open_object_store(join_uri(self.uri, prefix))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


def is_remote_uri(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` names an object in S3 (``s3://...``).

    Parameters
    ----------
    uri : str or path-like
        A local path or a URI.

    Returns
    -------
    bool
        True for ``s3://`` URIs.
    """
    return str(uri).startswith("s3://")


def join_uri(base: str, key: str) -> str:
    """Join a store URI and a relative key.

    Parameters
    ----------
    base : str
        Store URI or local path (``/data/run``, ``s3://bucket/prefix``).
    key : str
        Relative key; leading and trailing ``/`` are dropped.

    Returns
    -------
    str
        ``base/key``, or ``base`` itself when ``key`` is empty.
    """
    key = key.strip("/")
    if not key:
        return base
    return f"{base.rstrip('/')}/{key}"
