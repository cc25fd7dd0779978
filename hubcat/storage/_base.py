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
        from hubcat.storage import open_object_store  # the factory knows every implementation

        return open_object_store(join_uri(self.uri, prefix))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


def is_remote_uri(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` names an object in S3 (``s3://...``)."""
    return str(uri).startswith("s3://")


def join_uri(base: str, key: str) -> str:
    """Join a store URI and a relative key."""
    key = key.strip("/")
    if not key:
        return base
    return f"{base.rstrip('/')}/{key}"
