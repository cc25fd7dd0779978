"""One storage abstraction for local folders and S3.

Everything hubcat persists (tile stores, result stores, catalogues, run records) goes through an
:class:`ObjectStore`, so every store works the same on a local disk and under an ``s3://`` prefix.
Keys are ``/``-separated relative paths. :func:`open_object_store` picks the implementation from a
URI and :func:`zarr_store` adapts an object store to Zarr v3. boto3 is imported only when an S3
store is opened.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from hubcat.storage._base import ObjectStore, is_remote_uri, join_uri
from hubcat.storage._local import LocalObjectStore

__all__ = [
    "PUBLIC_BUCKETS",
    "LocalObjectStore",
    "ObjectStore",
    "ObjectZarrStore",
    "S3ObjectStore",
    "S3Options",
    "is_remote_uri",
    "join_uri",
    "open_object_store",
    "split_s3_uri",
    "zarr_store",
]


_LAZY = {
    "PUBLIC_BUCKETS": "hubcat.storage._s3",
    "S3ObjectStore": "hubcat.storage._s3",
    "S3Options": "hubcat.storage._s3",
    "split_s3_uri": "hubcat.storage._s3",
    "ObjectZarrStore": "hubcat.storage._zarr_adapter",
}


def __getattr__(name: str):
    # boto3 and zarr load only when an S3 store or the Zarr adapter is first used.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


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
        from hubcat.storage._s3 import S3ObjectStore  # boto3 is only needed for S3

        return S3ObjectStore.from_uri(text, **options)
    if text.startswith("file://"):
        text = urlparse(text).path
    return LocalObjectStore(text)


def zarr_store(store: ObjectStore, *, read_only: bool = False):
    """Return a Zarr v3 store over ``store``.

    A local folder uses :class:`zarr.storage.LocalStore` directly; other stores use an adapter
    that forwards Zarr's key/value calls to the :class:`ObjectStore`.

    Parameters
    ----------
    store : ObjectStore
        Where the Zarr keys live.
    read_only : bool
        Open the Zarr store read-only.

    Returns
    -------
    zarr.abc.store.Store
        A :class:`zarr.storage.LocalStore` or an :class:`ObjectZarrStore`.
    """
    import zarr.storage

    if isinstance(store, LocalObjectStore):
        return zarr.storage.LocalStore(store.root, read_only=read_only)
    from hubcat.storage._zarr_adapter import ObjectZarrStore

    return ObjectZarrStore(store, read_only=read_only)
