"""The catalogue: similarity search over embedded Hubble tiles, for notebooks and the CLI.

>>> from catalog import Catalogue
>>> cat = Catalogue.open("demo-catalogue")            # a folder or an s3:// prefix
>>> cat.metadata()                                    # one row per tile (pandas)
>>> cat.similar(tile_id, k=10, filter="F606W")        # astropy Table, the query tile first
>>> cat.cone(SkyCoord(ra, dec, unit="deg"), 30 * u.arcsec)
>>> cat.anomalies(10); cat.show(result); cat.map("filter"); export(result, "hits.vot")

Provenance (the Merkle log of every row) lives in :mod:`catalog.provenance`.
"""

from __future__ import annotations

from catalog._catalogue import FORMAT, FORMAT_VERSION, Catalogue, TileCutout
from catalog._config import INDEX_KINDS, CatalogConfig
from catalog._embed import prepare_image
from catalog._export import EXPORT_FORMATS, export, table_to_bytes
from catalog._query import FILTER_KEYS, RESULT_COLUMNS, result_table, to_angle
from catalog.errors import (
    CatalogError,
    CatalogNotFoundError,
    CatalogWarning,
    CorruptCatalogError,
    IncompatibleCatalogError,
    ModelUnavailableError,
    QueryError,
    ShardReadError,
    UnknownTileError,
)

__all__ = [
    "EXPORT_FORMATS",
    "FILTER_KEYS",
    "FORMAT",
    "FORMAT_VERSION",
    "INDEX_KINDS",
    "RESULT_COLUMNS",
    "CatalogConfig",
    "CatalogError",
    "CatalogNotFoundError",
    "CatalogWarning",
    "Catalogue",
    "CorruptCatalogError",
    "IncompatibleCatalogError",
    "ModelUnavailableError",
    "QueryError",
    "ShardReadError",
    "TileCutout",
    "UnknownTileError",
    "export",
    "prepare_image",
    "result_table",
    "table_to_bytes",
    "to_angle",
]
