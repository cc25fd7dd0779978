"""A Zarr v3 store over any :class:`~hubcat.storage.ObjectStore` (S3 above all).

Zarr's store API is asynchronous; :class:`~hubcat.storage.ObjectStore` is synchronous (boto3 is).
Each call runs the blocking object-store call in a worker thread (``asyncio.to_thread``), so
Zarr's event loop keeps fetching other chunks concurrently. Zarr byte requests map onto ranged
reads (``get_range``), so reading a chunk header or a shard index never downloads a whole object.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from hubcat.errors import StorageError, StoreNotFoundError
from hubcat.storage._base import ObjectStore

__all__ = ["ObjectZarrStore"]


class ObjectZarrStore(Store):
    """Zarr v3 store whose keys are keys of an :class:`~hubcat.storage.ObjectStore`.

    Parameters
    ----------
    object_store : ObjectStore
        Where the bytes live (a local folder, an S3 prefix, ...).
    read_only : bool
        Refuse writes and deletes (Zarr raises ``ValueError`` on them).

    Notes
    -----
    The store pickles when its object store does (both built-in ones do), so arrays opened on it
    can be sent to Dask workers.
    """

    supports_writes: bool = True
    supports_deletes: bool = True
    supports_listing: bool = True

    def __init__(self, object_store: ObjectStore, *, read_only: bool = False) -> None:
        if not isinstance(object_store, ObjectStore):
            msg = f"ObjectZarrStore needs a hubcat.storage.ObjectStore, got {type(object_store).__name__}"
            raise StorageError(msg)
        read_only = read_only or not object_store.supports_writes
        super().__init__(read_only=read_only)
        self.object_store = object_store

    def with_read_only(self, read_only: bool = False) -> ObjectZarrStore:
        return type(self)(self.object_store, read_only=read_only)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ObjectZarrStore)
            and self.object_store.uri == other.object_store.uri
            and type(self.object_store) is type(other.object_store)
            and self.read_only == other.read_only
        )

    def __hash__(self) -> int:
        return hash((type(self.object_store), self.object_store.uri, self.read_only))

    def __str__(self) -> str:
        return self.object_store.uri

    def __repr__(self) -> str:
        return f"ObjectZarrStore({self.object_store!r}, read_only={self.read_only})"

    def __getstate__(self) -> dict:
        return {"object_store": self.object_store, "read_only": self._read_only}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["object_store"], read_only=state["read_only"])

    # -- reading --------------------------------------------------------------------------------
    def _get_sync(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        obj = self.object_store
        try:
            if byte_range is None:
                return obj.get(key)
            if isinstance(byte_range, RangeByteRequest):
                length = max(byte_range.end - byte_range.start, 0)
                if length == 0:
                    return b"" if obj.exists(key) else None
                return obj.get_range(key, byte_range.start, length)
            if isinstance(byte_range, OffsetByteRequest):
                size = obj.size(key)
                return obj.get_range(key, byte_range.offset, max(size - byte_range.offset, 0))
            if isinstance(byte_range, SuffixByteRequest):
                size = obj.size(key)
                start = max(size - byte_range.suffix, 0)
                return obj.get_range(key, start, size - start)
        except StoreNotFoundError:
            return None
        msg = f"unexpected Zarr byte request {byte_range!r} for key {key!r}"
        raise StorageError(msg)

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        if prototype is None:
            prototype = default_buffer_prototype()
        if not self._is_open:
            await self._open()
        data = await asyncio.to_thread(self._get_sync, key, byte_range)
        if data is None:
            return None
        return prototype.buffer.from_bytes(data)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.object_store.exists, key)

    async def getsize(self, key: str) -> int:
        try:
            return await asyncio.to_thread(self.object_store.size, key)
        except StoreNotFoundError as exc:
            raise FileNotFoundError(key) from exc

    # -- writing --------------------------------------------------------------------------------
    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()
        await self._ensure_open()
        if not isinstance(value, Buffer):
            msg = (
                f"ObjectZarrStore.set() needs a zarr Buffer for {key!r}, got {type(value).__name__}"
            )
            raise TypeError(msg)
        await asyncio.to_thread(self.object_store.put, key, value.to_bytes())

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        self._check_writable()
        if not await self.exists(key):
            await self.set(key, value)

    async def delete(self, key: str) -> None:
        self._check_writable()
        await asyncio.to_thread(self.object_store.delete, key)

    async def delete_dir(self, prefix: str) -> None:
        """Delete every key below ``prefix/`` (the whole store for ``""``), concurrently.

        Parameters
        ----------
        prefix : str
            Zarr key prefix of a group or array; a trailing ``/`` is ignored.

        Raises
        ------
        ValueError
            If the store is read-only (Zarr's own check).
        StorageError
            If a deletion fails in the object store.
        """
        self._check_writable()
        prefix = prefix.rstrip("/")
        keys = await asyncio.to_thread(self._list_sync, f"{prefix}/" if prefix else "")
        await asyncio.gather(*(asyncio.to_thread(self.object_store.delete, k) for k in keys))

    # -- listing --------------------------------------------------------------------------------
    def _list_sync(self, prefix: str) -> list[str]:
        return list(self.object_store.list(prefix))

    async def list(self) -> AsyncIterator[str]:
        for key in await asyncio.to_thread(self._list_sync, ""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in await asyncio.to_thread(self._list_sync, prefix):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/")
        base = f"{prefix}/" if prefix else ""
        seen: set[str] = set()
        for key in await asyncio.to_thread(self._list_sync, base):
            name = key[len(base) :].split("/", 1)[0]
            if name and name not in seen:
                seen.add(name)
                yield name
