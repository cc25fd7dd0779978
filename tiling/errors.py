"""Exceptions raised while reading sources and cutting or storing tiles.

They derive from :class:`hubcat.errors.HubcatError`; each also subclasses the builtin exception it
refines, so ``except ValueError`` keeps working. Messages name the bad value, what was expected,
and what to do about it.
"""

from __future__ import annotations

from hubcat.errors import HubcatError, HubcatWarning

__all__ = [
    "NonFinitePixelsWarning",
    "SourceError",
    "SourceNotFoundError",
    "TileNotFoundError",
    "TilingError",
    "UnitIntegrityError",
]


class SourceError(HubcatError, ValueError):
    """A source (FITS file, S3 object, MAST dataset) cannot be used as a mosaic.

    Parameters
    ----------
    source : str
        The source's path, URI or dataset id (kept as :attr:`source`).
    reason : str
        What is wrong and what to do (kept as :attr:`reason`); the message is
        ``"<source>: <reason>"``.
    """

    def __init__(self, source: str, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class SourceNotFoundError(SourceError, FileNotFoundError):
    """A source does not exist (no such file, key or dataset)."""


class TilingError(HubcatError, ValueError):
    """Tiling parameters or a tile store are not usable."""


class TileNotFoundError(TilingError, KeyError):
    """A tile id, mosaic id or work unit is not in the tile store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnitIntegrityError(TilingError):
    """A stored work unit's bytes do not match the sha256 recorded when it was written."""


class NonFinitePixelsWarning(HubcatWarning):
    """NaN or infinite pixels inside a mosaic's footprint; they are masked in the tiles."""
