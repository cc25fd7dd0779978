"""Cut Hubble mosaics into 224x224 tiles at several zooms, stored as Zarr v3 with metadata."""

from __future__ import annotations

from tiling.errors import HubcatError, SourceError, SourceNotFoundError, TilingError

__all__ = ["HubcatError", "SourceError", "SourceNotFoundError", "TilingError"]
