"""Exceptions and warnings raised by :mod:`catalog`.

Each error derives from :class:`hubcat.errors.HubcatError` and from the builtin it refines, so
``except KeyError`` or ``except FileNotFoundError`` keeps working. Messages name the bad value, what
was expected and what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hubcat.errors import HubcatError, HubcatWarning

__all__ = [
    "CatalogError",
    "CatalogNotFoundError",
    "CatalogWarning",
    "CorruptCatalogError",
    "IncompatibleCatalogError",
    "ModelUnavailableError",
    "QueryError",
    "ShardReadError",
    "UnknownTileError",
    "missing_part",
    "read_failed",
    "reading",
]


class CatalogError(HubcatError, ValueError):
    """A catalogue cannot be built, opened or queried as asked."""


class CatalogNotFoundError(CatalogError, FileNotFoundError):
    """No catalogue (no ``manifest.json``) at the given URI, or no such version."""


class IncompatibleCatalogError(CatalogError):
    """The catalogue was written in a format version this release cannot read, or inputs disagree
    (different models, tiling or preprocessing digests) so they cannot be combined."""


class CorruptCatalogError(CatalogError, OSError):
    """A catalogue file (index, vectors, metadata) is missing or its bytes do not match the
    sha256 recorded in the manifest."""


class UnknownTileError(CatalogError, KeyError):
    """A ``tile_id`` that is not in the catalogue."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ShardReadError(CatalogError, OSError):
    """Reading a shard of the catalogue (vectors, index codes) failed in the store (e.g. an S3
    error mid-query); the message names the shard. Nothing was changed: retry the query."""


class QueryError(CatalogError):
    """A query (image, coordinate, ``k``, filter) is not usable."""


class ModelUnavailableError(CatalogError, RuntimeError):
    """The catalogue's own model, weights or preprocessing cannot be loaded to embed a query."""


class CatalogWarning(HubcatWarning):
    """Something about a query the user should know (empty result, ``k`` clipped, ...)."""


def missing_part(part: str, where: str, fix: str) -> CorruptCatalogError:
    """The error for a part of a catalogue that its manifest names but the store does not hold.

    Parameters
    ----------
    part : str
        What is missing, with its key (``"vector shard vectors/00001.f32"``).
    where : str
        Whose part it is (``"catalogue s3://bucket/cat"``).
    fix : str
        What to do about it.
    """
    return CorruptCatalogError(f"{part} of {where} is missing (its manifest names it); {fix}")


def read_failed(part: str, where: str, exc: BaseException) -> ShardReadError:
    """The error for a store that failed while a part of a catalogue was read (retryable)."""
    msg = (
        f"reading {part} of {where} failed ({exc}); the query was not answered: retry it when "
        "the store is reachable"
    )
    return ShardReadError(msg)


@contextmanager
def reading(part: str, where: str, fix: str) -> Iterator[None]:
    """Map the store's errors while reading one part of a catalogue to catalogue errors.

    A missing object becomes :func:`missing_part` (:class:`CorruptCatalogError`), any other store
    failure :func:`read_failed` (:class:`ShardReadError`); both name the part and where it is.
    """
    from hubcat.errors import StorageError, StoreNotFoundError

    try:
        yield
    except StoreNotFoundError:
        raise missing_part(part, where, fix) from None
    except StorageError as exc:
        raise read_failed(part, where, exc) from exc
