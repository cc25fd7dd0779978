"""The foundation beneath hubcat's five stages.

``pipeline -> catalog, grid -> embeddings -> tiling -> hubcat``: this package depends on no stage
and every stage may use it. It holds what all of them share and none of them owns:

- :mod:`hubcat.errors`: the :class:`HubcatError` root and the storage errors;
- :mod:`hubcat.storage`: the :class:`~hubcat.storage.ObjectStore` interface, local and S3 stores,
  and the Zarr adapter;
- :mod:`hubcat.progress`: the progress-callback protocol (library code reports progress through
  it and never prints; only ``pipeline`` draws bars);
- :mod:`hubcat.synthetic`: seeded synthetic Hubble-like mosaics for tests, the grid self-test and
  benchmarks.
"""

from __future__ import annotations

from hubcat.errors import (
    HubcatError,
    HubcatWarning,
    StorageError,
    StoragePermissionError,
    StoreNotFoundError,
)

__all__ = [
    "HubcatError",
    "HubcatWarning",
    "StorageError",
    "StoragePermissionError",
    "StoreNotFoundError",
]
