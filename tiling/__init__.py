"""Cut Hubble mosaics into 224x224 tiles at several zooms, stored as Zarr v3 with metadata.

>>> from tiling import TileStore, TilingConfig
>>> store = TileStore.open_or_create("tiles/", TilingConfig(zooms=(1, 2, 4)))  # doctest: +SKIP
>>> store.add_mosaic("j8bt06010_drz.fits")  # doctest: +SKIP
"""

from __future__ import annotations

from tiling._batch import BatchReport, SourceResult, tile_sources
from tiling._config import TILE_SIZE, TilingConfig
from tiling._header import normalise_bunit, normalise_header
from tiling._ingest import AddReport, MosaicReport
from tiling._pixels import StretchParams, bin_box, stretch
from tiling._source import RangeFile
from tiling._store import TileStore
from tiling._units import UnitChunk, UnitRef
from tiling._wcs import box_wcs
from tiling.augment import AUGMENTATIONS, augment, augment_all
from tiling.errors import (
    NonFinitePixelsWarning,
    SourceError,
    SourceNotFoundError,
    TileNotFoundError,
    TilingError,
    UnitIntegrityError,
)

__all__ = [
    "AUGMENTATIONS",
    "TILE_SIZE",
    "AddReport",
    "BatchReport",
    "MosaicReport",
    "NonFinitePixelsWarning",
    "RangeFile",
    "SourceError",
    "SourceNotFoundError",
    "SourceResult",
    "StretchParams",
    "TileNotFoundError",
    "TileStore",
    "TilingConfig",
    "TilingError",
    "UnitChunk",
    "UnitIntegrityError",
    "UnitRef",
    "augment",
    "augment_all",
    "bin_box",
    "box_wcs",
    "normalise_bunit",
    "normalise_header",
    "stretch",
    "tile_sources",
]
