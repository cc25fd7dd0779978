"""Cone-search benchmark: metadata read by HEALPix row group against a full scan.

Figures (each a ratio against a baseline measured in the same run, median of 3):

- metadata bytes a cone search on a freshly opened catalogue reads (row groups whose HEALPix
  range meets the cone, plus their shards' footers) against the whole metadata's bytes;
- open + cone search time reading by row group against open + reading every shard + the same
  cone search over the whole table (the path of catalogues without shards).

The catalogue: synthetic tiles clustered in 500 mosaic-sized fields (0.05 deg) over the sky, as
HST pointings are, 8-d vectors (the vectors play no part in a cone search); the shard and row
group sizes are the defaults (1,048,576 and 16,384 rows).
"""

from __future__ import annotations

import statistics
import tempfile
import time

import numpy as np

from benchmarks._common import Figure

STAGE = "cone"


def _counting(root: str):
    """A local store of ``root`` that counts the bytes of its metadata reads."""
    from hubcat.storage import LocalObjectStore

    class Counting(LocalObjectStore):
        bytes = 0

        def get(self, key: str) -> bytes:
            data = super().get(key)
            self.bytes += len(data) if "metadata" in key else 0
            return data

        def get_range(self, key: str, start: int, length: int) -> bytes:
            data = super().get_range(key, start, length)
            self.bytes += len(data) if "metadata" in key else 0
            return data

    return Counting(root)


def _catalogue(root: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    from catalog import CatalogConfig, Catalogue

    rng = np.random.default_rng(0)
    fields = 500
    fra = rng.uniform(0, 360, fields)
    fdec = np.degrees(np.arcsin(rng.uniform(-1, 1, fields)))
    which = rng.integers(0, fields, n)
    dec = np.clip(fdec[which] + rng.uniform(-0.05, 0.05, n), -90, 90)
    ra = (fra[which] + rng.uniform(-0.05, 0.05, n) / np.cos(np.radians(dec)).clip(0.01)) % 360
    meta = pd.DataFrame(
        {
            "tile_id": [f"t{i:08d}" for i in range(n)],
            "source": [f"s3://stpubdata/hst/public/f{w:04d}_drz.fits" for w in which],
            "source_sha256": "0" * 64,
            "hdu": 1,
            "zoom": 1 + np.arange(n) % 3,
            "x0": (np.arange(n) % 500) * 224,
            "y0": (np.arange(n) // 500) * 224,
            "ra": ra,
            "dec": dec,
            "tile_sha256": "1" * 64,
            "tiling_digest": "4" * 64,
            "instrument": "ACS",
            "filter": "F814W",
        }
    )
    x = rng.normal(size=(n, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    model = {"name": "synthetic", "weights_sha256": "2" * 64, "digest": "3" * 64, "dim": 8}
    Catalogue.from_vectors(
        root, meta, x, model, config=CatalogConfig(exact_max=10**9, compressed_min=10**9)
    )
    return fra, fdec


def run(quick: bool = False) -> list[Figure]:
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    from catalog import Catalogue
    from hubcat.storage import open_object_store

    n = 100_000 if quick else 1_000_000
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = f"{tmp}/cat"
        t0 = time.perf_counter()
        fra, fdec = _catalogue(root, n)
        print(f"  built {n} rows in {time.perf_counter() - t0:.1f} s", flush=True)
        plain = open_object_store(root)
        total = sum(
            s["bytes"]
            for seg in Catalogue.open(plain).manifest["segments"]
            for s in seg["metadata_shards"]
        )
        for radius in (60 * u.arcsec, 1 * u.deg):
            lazy_t, full_t, lazy_b, full_b, rows = [], [], [], [], 0
            for i in range(3):
                centre = SkyCoord(fra[i], fdec[i], unit="deg")
                store = _counting(root)
                t = time.perf_counter()
                got = Catalogue.open(store).cone(centre, radius)
                lazy_t.append(time.perf_counter() - t)
                lazy_b.append(store.bytes)
                store = _counting(root)
                t = time.perf_counter()
                cat = Catalogue.open(store)
                cat.metadata()
                want = cat.cone(centre, radius)
                full_t.append(time.perf_counter() - t)
                full_b.append(store.bytes)
                if list(got["tile_id"]) != list(want["tile_id"]):
                    msg = f"the row-group cone at {centre} differs from the full scan"
                    raise AssertionError(msg)
                rows += len(got)
            name = f"cone {radius:.4g} at 10^{int(np.log10(n))} rows ({rows // 3} found)"
            lb, fb = statistics.median(lazy_b), statistics.median(full_b)
            figures.append(
                Figure(
                    STAGE,
                    f"{name}: metadata bytes read",
                    lb,
                    "B",
                    "whole metadata",
                    fb,
                    note=f"{total} B in shards",
                )
            )
            lt, ft = statistics.median(lazy_t), statistics.median(full_t)
            figures.append(
                Figure(STAGE, f"{name}: open + cone", lt, "s", "open + read all + cone", ft)
            )
    return figures
