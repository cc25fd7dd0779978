"""The root of hubcat's exceptions and warnings, and the storage errors every stage shares.

Every hubcat exception derives from :class:`HubcatError`. Each error also subclasses the builtin
exception it refines, so ``except OSError`` or ``except ValueError`` keeps working. Messages name
the bad value, what was expected, and what to do about it. The stages add their own errors in
their ``errors`` modules (``tiling.errors``, ``embeddings.errors``, ...), all below this root.
"""

from __future__ import annotations

__all__ = [
    "HubcatError",
    "HubcatWarning",
    "KeyFileError",
    "StorageError",
    "StoragePermissionError",
    "StoreNotFoundError",
]


class HubcatError(Exception):
    """Base class of every error raised by hubcat."""


class HubcatWarning(UserWarning):
    """Base class of every warning issued by hubcat."""


class StorageError(HubcatError, OSError):
    """Reading or writing a store (local folder or S3) failed."""


class StoreNotFoundError(StorageError, FileNotFoundError):
    """A store, or a key inside it, does not exist."""


class StoragePermissionError(StorageError, PermissionError):
    """Access to a store, or a key inside it, was denied (HTTP 403, missing credentials)."""


class KeyFileError(HubcatError, ValueError):
    """A key file is not a readable key of the expected kind (Ed25519 PEM)."""
