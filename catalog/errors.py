"""Exceptions and warnings raised by :mod:`catalog`.

Each error derives from :class:`hubcat.errors.HubcatError` and from the builtin it refines, so
``except KeyError`` or ``except FileNotFoundError`` keeps working. Messages name the bad value, what
was expected and what to do about it.
"""

from __future__ import annotations

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
