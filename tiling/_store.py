"""The tile store: Zarr v3 tile arrays plus a per-tile metadata table, local or on S3.

Layout under the store's root (every key goes through :mod:`hubcat.storage`)::

    zarr.json                               root group; attributes: tiling config, digest,
                                            augmentations, format version
    tiles/<mosaic_id>/z<zoom>/              float32 (N, 224, 224), chunks (min(unit_size, grid tiles), 224, 224)
    masks/<mosaic_id>/z<zoom>/              bool    (N, 224, 224), same chunks
    mosaics/<mosaic_id>.parquet             metadata table of the mosaic's tiles
    mosaics/<mosaic_id>.json                mosaic record; written LAST: a mosaic is visible,
                                            and counts as present, only once this exists

``mosaic_id`` is ``<first 16 hex of the source sha256>_h<hdu>``; a tile id is
``<mosaic_id>_z<zoom>_x<x0>_y<y0>`` (``..._c_x..`` for source-centred cutouts), so re-tiling a
file gives the same ids. Adding a mosaic that is already present does nothing; an interrupted
add leaves arrays without a record, which are invisible and overwritten by the next attempt.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np

from hubcat.errors import StoreNotFoundError
from hubcat.storage import ObjectStore, open_object_store, zarr_store
from tiling._config import FORMAT_VERSION, TilingConfig
from tiling._engine import CutTile, ImageCutter
from tiling._header import normalise_header, raw_cards
from tiling._source import open_fits, open_source, plan_images
from tiling._wcs import box_wcs, centres_icrs, pixel_scale_arcsec, wcs_from_header_text
from tiling.augment import AUGMENTATIONS
from tiling.errors import (
    NonFinitePixelsWarning,
    SourceError,
    TileNotFoundError,
    TilingError,
    UnitIntegrityError,
)

__all__ = ["AddReport", "MosaicReport", "TileStore", "UnitRef"]

#: Metadata columns, in order (the contract of docs/architecture.md plus tiling extras).
COLUMNS = (
    "tile_id", "mosaic_id", "unit_key", "tile_index", "kind", "source", "source_sha256", "hdu",
    "extname", "zoom", "x0", "y0", "box", "ra", "dec", "pixel_scale", "coverage", "telescope",
    "instrument", "detector", "filter", "date_obs", "exptime", "proposal_id", "target", "bunit",
    "tile_sha256", "n_sources", "bkg_median", "bkg_rms", "brightest_flux",
    "brightest_size_arcsec", "brightest_x", "brightest_y", "has_extended", "tiling_digest",
)  # fmt: skip


@dataclass(frozen=True)
class UnitRef:
    """One grid work unit: one Zarr chunk of one mosaic at one zoom.

    ``sha256`` is the hash of the chunk's tiles as float32 little-endian C-order bytes, shape
    ``(len(tile_ids), 224, 224)``.
    """

    unit_key: str
    mosaic_id: str
    zoom: int
    chunk: int
    tile_ids: tuple[str, ...]
    sha256: str


@dataclass
class MosaicReport:
    """What happened to one image HDU of a source."""

    source: str
    hdu: int
    mosaic_id: str
    status: str  # "added", "already present"
    tiles_per_zoom: dict[int, int] = field(default_factory=dict)
    centred_per_zoom: dict[int, int] = field(default_factory=dict)
    dropped_per_zoom: dict[int, int] = field(default_factory=dict)
    skipped_zooms: dict[int, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def tiles(self) -> int:
        return sum(self.tiles_per_zoom.values()) + sum(self.centred_per_zoom.values())


@dataclass
class AddReport:
    """Result of :meth:`TileStore.add_mosaic` for one source (one entry per band/HDU)."""

    source: str
    source_sha256: str
    mosaics: list[MosaicReport]
    skipped_hdus: dict[int, str] = field(default_factory=dict)

    @property
    def mosaic_id(self) -> str:
        """Id of the first (usually only) mosaic of the source."""
        return self.mosaics[0].mosaic_id

    @property
    def mosaic_ids(self) -> list[str]:
        return [m.mosaic_id for m in self.mosaics]

    @property
    def already_present(self) -> bool:
        return all(m.status == "already present" for m in self.mosaics)

    @property
    def tiles_written(self) -> int:
        return sum(m.tiles for m in self.mosaics if m.status == "added")

    @property
    def warnings(self) -> list[str]:
        return [w for m in self.mosaics for w in m.warnings]

    def summary(self) -> str:
        """One line per mosaic: id, status, tiles per zoom, skipped zooms."""
        lines = []
        for m in self.mosaics:
            per = ", ".join(f"z{z}: {n}" for z, n in sorted(m.tiles_per_zoom.items()))
            skip = "; ".join(f"z{z} skipped: {r}" for z, r in sorted(m.skipped_zooms.items()))
            lines.append(
                f"{m.mosaic_id} (HDU {m.hdu}) {m.status}: {per or 'no tiles'}"
                + (f"; {skip}" if skip else "")
            )
        for hdu, reason in sorted(self.skipped_hdus.items()):
            lines.append(f"HDU {hdu} skipped: {reason}")
        return "\n".join(lines)


class _ZoomWriter:
    """Append tiles of one mosaic and zoom to Zarr, one whole chunk (work unit) at a time.

    ``capacity`` is an upper bound on the number of tiles this zoom can get (its grid
    candidates), or None when unknown. Zarr stores every chunk at its full shape, so an array
    of 81 tiles chunked by 256 would write (and pad with zeros) 256 tiles: 3x the bytes, and
    the slowest step of tiling a small mosaic. When the bound is below ``unit_size`` the
    array has ONE chunk of ``capacity`` tiles instead; the work units are unchanged (the
    single unit 0 holds every tile either way), only the Zarr chunk shape is tighter.
    """

    def __init__(
        self,
        group,
        mosaic_id: str,
        zoom: int,
        config: TilingConfig,
        capacity: int | None = None,
    ) -> None:
        import zarr

        t, u = config.tile_size, config.unit_size
        self.mosaic_id, self.zoom, self.unit_size = mosaic_id, zoom, u
        chunk = u if capacity is None else max(1, min(u, capacity))
        self.tiles = zarr.create_array(
            group.store,
            name=f"tiles/{mosaic_id}/z{zoom}",
            shape=(0, t, t),
            chunks=(chunk, t, t),
            dtype="float32",
            fill_value=0.0,
            compressors=None,  # stretched sky noise: zstd saves ~7 % for 5x the write time
            overwrite=True,
        )
        self.masks = zarr.create_array(
            group.store,
            name=f"masks/{mosaic_id}/z{zoom}",
            shape=(0, t, t),
            chunks=(chunk, t, t),
            dtype="bool",
            fill_value=False,
            overwrite=True,
        )
        # One unit of tiles and masks, filled in place (no list of tiles to stack at flush
        # time: half the peak memory), allocated on the first tile, dropped by ``close``.
        self._shape = (chunk if capacity is not None else u, t, t)
        self._pixels: np.ndarray | None = None
        self._masks: np.ndarray | None = None
        self._ids: list[str] = []
        self.count = 0
        self.units: list[dict] = []

    def append(self, tile_id: str, pixels: np.ndarray, mask: np.ndarray) -> tuple[str, int]:
        if self._pixels is None:
            self._pixels = np.empty(self._shape, dtype="<f4")
            self._masks = np.empty(self._shape, dtype=bool)
        n = len(self._ids)
        if n == self._pixels.shape[0]:  # more tiles than the bound (cannot happen: defensive)
            self._pixels = np.concatenate([self._pixels, np.empty_like(self._pixels)])
            self._masks = np.concatenate([self._masks, np.empty_like(self._masks)])
        index = self.count + n
        self._pixels[n] = pixels
        self._masks[n] = mask
        self._ids.append(tile_id)
        unit_key = f"{self.mosaic_id}/z{self.zoom}/{index // self.unit_size}"
        if len(self._ids) == self.unit_size:
            self.flush()
        return unit_key, index

    def flush(self) -> None:
        n = len(self._ids)
        if not n:
            return
        pixels, masks = self._pixels[:n], self._masks[:n]
        start = self.count
        t = pixels.shape[1]
        self.tiles.resize((start + n, t, t))
        self.masks.resize((start + n, t, t))
        self.tiles[start : start + n] = pixels
        self.masks[start : start + n] = masks
        chunk = start // self.unit_size
        self.units.append(
            {
                "unit_key": f"{self.mosaic_id}/z{self.zoom}/{chunk}",
                "mosaic_id": self.mosaic_id,
                "zoom": self.zoom,
                "chunk": chunk,
                "tile_ids": list(self._ids),
                "sha256": hashlib.sha256(pixels.data).hexdigest(),
            }
        )
        self.count += n
        self._ids = []

    def close(self) -> None:
        """Write the last (partial) unit and release the buffer."""
        self.flush()
        self._pixels = self._masks = None


class TileStore:
    """A Zarr v3 store of 224x224 tiles with per-tile metadata (see the module docstring).

    Create with :meth:`create`, :meth:`open` or :meth:`open_or_create`; never instantiate
    directly.
    """

    def __init__(self, objects: ObjectStore, config: TilingConfig, group) -> None:
        self._objects = objects
        self.config = config
        self._group = group
        self._lock = threading.Lock()
        self._meta_cache = None
        self._positions = None
        self._records: dict[str, dict] | None = None
        self._arrays: dict[str, object] = {}

    # -- opening --------------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        """URI of the store's root."""
        return self._objects.uri

    @property
    def objects(self) -> ObjectStore:
        """The :class:`ObjectStore` under the tile store."""
        return self._objects

    @property
    def digest(self) -> str:
        """Digest of the tiling configuration (``TilingConfig.digest()``)."""
        return self.config.digest()

    @classmethod
    def _exists(cls, objects: ObjectStore) -> bool:
        return objects.exists("zarr.json")

    @classmethod
    def create(cls, uri: str | os.PathLike[str], config: TilingConfig | None = None) -> TileStore:
        """Create an empty tile store at ``uri``.

        Raises
        ------
        TilingError
            If a tile store already exists there.
        """
        import zarr

        config = config or TilingConfig()
        objects = open_object_store(uri)
        if cls._exists(objects):
            msg = f"a tile store already exists at {objects.uri}; use TileStore.open or open_or_create"
            raise TilingError(msg)
        group = zarr.open_group(zarr_store(objects), mode="w")
        group.attrs.update(
            {
                "hubcat_tile_store": FORMAT_VERSION,
                "tiling_config": config.to_dict(),
                "tiling_digest": config.digest(),
                "augmentations": list(AUGMENTATIONS),
                "augmentation_rule": "np.rot90(tile if i < 4 else tile[:, ::-1], i % 4), applied on read",
            }
        )
        return cls(objects, config, group)

    @classmethod
    def open(cls, uri: str | os.PathLike[str], *, read_only: bool = False) -> TileStore:
        """Open an existing tile store.

        Raises
        ------
        StoreNotFoundError
            If there is no tile store at ``uri``.
        """
        import zarr

        objects = open_object_store(uri)
        if not cls._exists(objects):
            msg = (
                f"no tile store at {objects.uri}; create one with TileStore.create or `hubcat tile`"
            )
            raise StoreNotFoundError(msg)
        group = zarr.open_group(
            zarr_store(objects, read_only=read_only), mode="r" if read_only else "r+"
        )
        attrs = dict(group.attrs)
        if "tiling_config" not in attrs:
            msg = f"{objects.uri} is a Zarr group but not a hubcat tile store (no tiling_config attribute)"
            raise TilingError(msg)
        config = TilingConfig.from_dict(attrs["tiling_config"])
        return cls(objects, config, group)

    @classmethod
    def open_or_create(
        cls, uri: str | os.PathLike[str], config: TilingConfig | None = None
    ) -> TileStore:
        """Open the store at ``uri``, or create it with ``config``.

        Raises
        ------
        TilingError
            If the existing store was made with parameters whose digest differs from ``config``.
        """
        objects = open_object_store(uri)
        if not cls._exists(objects):
            return cls.create(uri, config)
        store = cls.open(uri)
        if config is not None and config.digest() != store.digest:
            theirs, ours = store.config.digest_fields(), config.digest_fields()
            diff = {k: (theirs.get(k), ours.get(k)) for k in ours if theirs.get(k) != ours.get(k)}
            msg = (
                f"the tile store at {objects.uri} was made with other tiling parameters "
                f"(store vs requested: {diff}); use a new store path or the store's parameters"
            )
            raise TilingError(msg)
        return store

    def __repr__(self) -> str:
        return f"TileStore({self.uri!r}, mosaics={len(self._mosaic_records())})"

    # -- records --------------------------------------------------------------------------------
    def _mosaic_records(self) -> dict[str, dict]:
        with self._lock:
            if self._records is None:
                records = {}
                for key in self._objects.list("mosaics/"):
                    if key.endswith(".json"):
                        record = json.loads(self._objects.get(key))
                        records[record["mosaic_id"]] = record
                self._records = records
            return self._records

    def _invalidate(self) -> None:
        with self._lock:
            self._records = None
            self._meta_cache = None

    def mosaics(self):
        """One row per mosaic: id, source, sha256, hdu, shape, stretch, tiles per zoom.

        Returns
        -------
        pandas.DataFrame
        """
        import pandas as pd

        rows = []
        for mid, r in sorted(self._mosaic_records().items()):
            rows.append(
                {
                    "mosaic_id": mid,
                    "source": r["source"],
                    "source_sha256": r["source_sha256"],
                    "hdu": r["hdu"],
                    "extname": r["extname"],
                    "shape": tuple(r["shape"]),
                    "footprint": r["footprint"],
                    "stretch": r["stretch"],
                    "tiles_per_zoom": {int(k): v for k, v in r["tiles_per_zoom"].items()},
                    "skipped_zooms": {int(k): v for k, v in r["skipped_zooms"].items()},
                    **r["header"],
                }
            )
        return pd.DataFrame(rows)

    def mosaic_record(self, mosaic_id: str) -> dict:
        """The stored record of one mosaic (header cards, WCS, stretch, units)."""
        with self._lock:
            records = self._records
        if records is not None and mosaic_id in records:
            return records[mosaic_id]
        # one object read, not a listing: a grid task opens the store to read a single unit
        try:
            return json.loads(self._objects.get(f"mosaics/{mosaic_id}.json"))
        except (StoreNotFoundError, FileNotFoundError):
            msg = f"mosaic {mosaic_id!r} is not in the tile store at {self.uri}"
            raise TileNotFoundError(msg) from None

    def has_mosaic(self, mosaic_id: str) -> bool:
        """Whether a mosaic is completely stored (its record exists)."""
        return self._objects.exists(f"mosaics/{mosaic_id}.json")

    # -- adding ------------------------------------------------------------------------------
    def add_mosaic(self, source: str | os.PathLike[str], *, hdu: int | None = None) -> AddReport:
        """Tile one source (every band / image HDU, or only ``hdu``) into the store.

        Idempotent by content: a mosaic whose record is already stored is skipped
        (``status == "already present"``). The tile arrays are written first and the mosaic
        record last, so an interruption leaves nothing visible; re-running resumes.

        Parameters
        ----------
        source : str or path-like
            Local FITS path (``.fits``, ``.fits.gz``), ``file://`` or ``s3://bucket/key`` URI.
        hdu : int, optional
            Tile only this HDU.

        Returns
        -------
        AddReport

        Raises
        ------
        SourceNotFoundError
            If the source does not exist.
        SourceError
            If it cannot be tiled: not FITS, truncated, no 2-D image HDU, no celestial WCS,
            un-drizzled exposure (``_flt``), no valid pixel, smaller than one tile at every zoom.
        """
        with open_source(source) as src:
            hdul, fileobj = open_fits(src)
            try:
                plans, rejected = plan_images(src, hdul)
                if hdu is not None:
                    plans = [p for p in plans if p.hdu == hdu]
                    if not plans:
                        msg = f"HDU {hdu} is not a tileable image HDU of this file ({dict(rejected) or 'see its structure'})"
                        raise SourceError(src.uri, msg)
                if not plans:
                    reasons = "; ".join(r for _, r in rejected)
                    raise SourceError(src.uri, f"no image HDU can be tiled: {reasons}")
                reports: list[MosaicReport] = []
                skipped = dict(rejected)
                for plan in plans:
                    try:
                        reports.append(self._add_image(src, plan))
                    except SourceError as exc:
                        if len(plans) == 1:
                            raise
                        skipped[plan.hdu] = exc.reason
                if not reports:
                    reasons = "; ".join(r for _, r in sorted(skipped.items()))
                    raise SourceError(src.uri, f"no image HDU can be tiled: {reasons}")
            finally:
                hdul.close()
                fileobj.close()
        return AddReport(src.uri, src.sha256, reports, skipped)

    def _add_image(self, src, plan) -> MosaicReport:
        cfg = self.config
        mosaic_id = f"{src.sha256[:16]}_h{plan.hdu}"
        if self.has_mosaic(mosaic_id):
            record = self.mosaic_record(mosaic_id)
            return MosaicReport(
                src.uri,
                plan.hdu,
                mosaic_id,
                "already present",
                tiles_per_zoom={int(k): v for k, v in record["tiles_per_zoom"].items()},
                skipped_zooms={int(k): v for k, v in record["skipped_zooms"].items()},
            )
        scale = pixel_scale_arcsec(plan.wcs)
        cutter = ImageCutter(src, plan, cfg, scale)
        params = cutter.measure_stretch()
        zooms, skipped_zooms = cutter.zooms_fitting()
        if not zooms:
            msg = (
                f"HDU {plan.hdu} is {cutter.nx}x{cutter.ny} px, smaller than one "
                f"{cfg.tile_size}x{cfg.tile_size} tile at zoom {min(cfg.zooms)} "
                f"({cfg.box(min(cfg.zooms))} source px on a side); give a larger mosaic"
            )
            raise SourceError(src.uri, msg)
        header = normalise_header(plan.header, plan.primary, name=src.name)
        writers = {
            z: _ZoomWriter(
                self._group,
                mosaic_id,
                z,
                cfg,
                None if cfg.centred_cutouts else cutter.grid_candidates(z),
            )
            for z in zooms
        }
        rows: list[dict] = []
        report = MosaicReport(src.uri, plan.hdu, mosaic_id, "added", skipped_zooms=skipped_zooms)
        totals = {"bad": 0, "dropped": dict.fromkeys(zooms, 0)}
        extended: list[tuple[int, float, float]] = []
        seen: set[tuple[int, int, int]] = set()

        def write(tile: CutTile) -> None:
            tag = "c_" if tile.kind == "centred" else ""
            tile_id = f"{mosaic_id}_z{tile.zoom}_{tag}x{tile.x0}_y{tile.y0}"
            unit_key, index = writers[tile.zoom].append(tile_id, tile.pixels, tile.mask)
            rows.append(
                {
                    "tile_id": tile_id,
                    "unit_key": unit_key,
                    "tile_index": index,
                    "kind": tile.kind,
                    "zoom": tile.zoom,
                    "x0": tile.x0,
                    "y0": tile.y0,
                    "coverage": tile.coverage,
                    "tile_sha256": tile.sha256,
                    **tile.stats,
                }
            )
            seen.add((tile.zoom, tile.x0, tile.y0))

        def on_block(result) -> None:
            totals["bad"] += result.nonfinite_inside
            for z, n in result.dropped.items():
                totals["dropped"][z] += n
            for tile in result.tiles:
                write(tile)
            extended.extend(result.extended)

        # One pass per zoom: only that zoom's unit buffer is in memory (reading the mosaic
        # again costs little next to cutting it); tile order within a zoom is unchanged.
        total = sum(len(cutter.blocks([z])) for z in zooms)
        with _progress(cfg.progress, f"tiling {src.name} HDU {plan.hdu}") as progress:
            finished = 0
            for z in zooms:

                def step(done: int, _total: int, offset: int = finished) -> None:
                    if progress is not None:
                        progress(offset + done, total)

                cutter.run([z], on_block, step)
                finished += len(cutter.blocks([z]))
                if cfg.centred_cutouts:
                    for tile in cutter.centred([e for e in extended if e[0] == z], seen):
                        write(tile)
                writers[z].close()
        if not rows:
            msg = (
                f"HDU {plan.hdu}: no tile reaches min_coverage={cfg.min_coverage} at any zoom "
                f"{zooms}; lower --min-coverage or check the footprint ({plan.footprint_kind})"
            )
            raise SourceError(src.uri, msg)
        if totals["bad"]:
            text = (
                f"{src.uri}: HDU {plan.hdu} has {totals['bad']} NaN/inf pixels inside the "
                f"footprint ({plan.footprint_kind}); they are masked in the tiles"
            )
            report.warnings.append(text)
            warnings.warn(NonFinitePixelsWarning(text), stacklevel=3)
        for z in zooms:
            report.tiles_per_zoom[z] = sum(
                1 for r in rows if r["zoom"] == z and r["kind"] == "grid"
            )
            report.dropped_per_zoom[z] = totals["dropped"][z]
            if cfg.centred_cutouts:
                report.centred_per_zoom[z] = sum(
                    1 for r in rows if r["zoom"] == z and r["kind"] == "centred"
                )
            if report.tiles_per_zoom[z] == 0:
                skipped_zooms[z] = f"no tile at zoom {z} reaches min_coverage={cfg.min_coverage}"
        self._commit(src, plan, mosaic_id, header, params, scale, rows, writers, report)
        return report

    def _commit(self, src, plan, mosaic_id, header, params, scale, rows, writers, report) -> None:
        import pandas as pd

        cfg = self.config
        df = pd.DataFrame(rows)
        box = df["zoom"].to_numpy() * cfg.tile_size
        cx = df["x0"].to_numpy() + (box - 1) / 2.0
        cy = df["y0"].to_numpy() + (box - 1) / 2.0
        ra, dec = centres_icrs(plan.wcs, cx, cy)
        df["ra"], df["dec"] = ra, dec
        df["box"] = box
        df["pixel_scale"] = scale * df["zoom"].to_numpy()
        df["mosaic_id"] = mosaic_id
        df["source"] = src.uri
        df["source_sha256"] = src.sha256
        df["hdu"] = plan.hdu
        df["extname"] = plan.extname
        for key, value in header.items():
            df[key] = value
        df["tiling_digest"] = cfg.digest()
        df = df[list(COLUMNS)]
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        self._objects.put(f"mosaics/{mosaic_id}.parquet", buf.getvalue())
        record = {
            "mosaic_id": mosaic_id,
            "source": src.uri,
            "source_name": src.name,
            "source_sha256": src.sha256,
            "source_bytes": src.size,
            "hdu": plan.hdu,
            "extname": plan.extname,
            "shape": [int(v) for v in (plan.header["NAXIS2"], plan.header["NAXIS1"])],
            "footprint": plan.footprint_kind,
            "footprint_hdu": plan.footprint_hdu,
            "header": header,
            "header_cards": raw_cards(plan.header, plan.primary),
            "primary_cards": raw_cards(plan.primary),
            "wcs_header": plan.wcs.to_header_string(relax=True),
            "pixel_scale_arcsec": scale,
            "stretch": {"kind": "asinh", **params.to_dict()},
            "tiling_digest": cfg.digest(),
            "tiles_per_zoom": {str(z): n for z, n in report.tiles_per_zoom.items()},
            "centred_per_zoom": {str(z): n for z, n in report.centred_per_zoom.items()},
            "skipped_zooms": {str(z): r for z, r in report.skipped_zooms.items()},
            "warnings": report.warnings,
            "units": [u for z in sorted(writers) for u in writers[z].units],
        }
        self._objects.put(f"mosaics/{mosaic_id}.json", json.dumps(record, indent=1).encode())
        self._invalidate()

    # -- reading ------------------------------------------------------------------------------
    def metadata(self):
        """One row per tile of every stored mosaic (columns: see ``docs/architecture.md``).

        Returns
        -------
        pandas.DataFrame
        """
        import pandas as pd

        if self._meta_cache is None:
            frames = [
                pd.read_parquet(io.BytesIO(self._objects.get(f"mosaics/{mid}.parquet")))
                for mid in sorted(self._mosaic_records())
            ]
            if frames:
                df = pd.concat(frames, ignore_index=True)
            else:
                df = pd.DataFrame({c: [] for c in COLUMNS})
            self._meta_cache = df
        return self._meta_cache.copy()

    def _row(self, tile_id: str):
        if self._meta_cache is None:
            self.metadata()
        with self._lock:
            meta = self._meta_cache
            if self._positions is None or self._positions[0] is not meta:
                self._positions = (meta, {t: i for i, t in enumerate(meta["tile_id"])})
            position = self._positions[1].get(tile_id)
        if position is None:
            msg = f"tile {tile_id!r} is not in the tile store at {self.uri}; list ids with .metadata()"
            raise TileNotFoundError(msg)
        return meta.iloc[position]

    def _array(self, kind: str, mosaic_id: str, zoom: int):
        import zarr

        key = f"{kind}/{mosaic_id}/z{zoom}"
        if key not in self._arrays:
            self._arrays[key] = zarr.open_array(self._group.store, path=key, mode="r")
        return self._arrays[key]

    def read(self, tile_id: str, *, mask: bool = False, wcs: bool = False):
        """Pixels of one tile, stretched to [0, 1].

        Parameters
        ----------
        tile_id : str
        mask : bool
            Also return the footprint mask (bool, True = valid).
        wcs : bool
            Also return the tile's WCS (see :meth:`tile_wcs`).

        Returns
        -------
        numpy.ndarray of float32, shape (224, 224)
            Or a tuple ``(tile, mask)``, ``(tile, wcs)`` or ``(tile, mask, wcs)``.

        Raises
        ------
        TileNotFoundError
        """
        row = self._row(tile_id)
        index = int(row["tile_index"])
        tile = np.asarray(self._array("tiles", row["mosaic_id"], int(row["zoom"]))[index])
        out: list = [tile]
        if mask:
            out.append(np.asarray(self._array("masks", row["mosaic_id"], int(row["zoom"]))[index]))
        if wcs:
            out.append(self.tile_wcs(tile_id))
        return out[0] if len(out) == 1 else tuple(out)

    def tile_wcs(self, tile_id: str):
        """The WCS of one tile (its own pixel grid at its zoom).

        Returns
        -------
        astropy.wcs.WCS
            Pixel ``(i, j)`` of the tile (0-based) is the centre of its binned pixel.
        """
        row = self._row(tile_id)
        record = self.mosaic_record(row["mosaic_id"])
        source_wcs = wcs_from_header_text(record["wcs_header"])
        return box_wcs(
            source_wcs, int(row["x0"]), int(row["y0"]), int(row["zoom"]), self.config.tile_size
        )

    def units(self) -> list[UnitRef]:
        """Every work unit (Zarr chunk) of the store, by mosaic, zoom and chunk."""
        out = []
        for mid in sorted(self._mosaic_records()):
            for u in self._mosaic_records()[mid]["units"]:
                out.append(
                    UnitRef(
                        u["unit_key"],
                        u["mosaic_id"],
                        int(u["zoom"]),
                        int(u["chunk"]),
                        tuple(u["tile_ids"]),
                        u["sha256"],
                    )
                )
        return out

    def unit(self, unit_key: str) -> UnitRef:
        """The :class:`UnitRef` of ``unit_key``."""
        mosaic_id = unit_key.split("/", 1)[0]
        try:
            units = self.mosaic_record(mosaic_id)["units"]
        except TileNotFoundError:
            units = []
        for u in units:
            if u["unit_key"] == unit_key:
                return UnitRef(
                    u["unit_key"],
                    u["mosaic_id"],
                    int(u["zoom"]),
                    int(u["chunk"]),
                    tuple(u["tile_ids"]),
                    u["sha256"],
                )
        msg = f"work unit {unit_key!r} is not in the tile store at {self.uri}; list them with .units()"
        raise TileNotFoundError(msg)

    def read_unit(self, unit_key: str) -> tuple[list[str], np.ndarray]:
        """Read one work unit (one Zarr chunk) and check its sha256.

        Returns
        -------
        tile_ids : list of str
        tiles : numpy.ndarray of float32, shape (N, 224, 224)

        Raises
        ------
        TileNotFoundError
            If the unit does not exist.
        UnitIntegrityError
            If the chunk's bytes do not hash to the recorded sha256 (corrupted or altered).
        """
        ref = self.unit(unit_key)
        u = self.config.unit_size
        start = ref.chunk * u
        tiles = np.ascontiguousarray(
            self._array("tiles", ref.mosaic_id, ref.zoom)[start : start + len(ref.tile_ids)],
            dtype="<f4",
        )
        digest = hashlib.sha256(tiles.tobytes()).hexdigest()
        if digest != ref.sha256:
            msg = (
                f"work unit {unit_key} of {self.uri} is corrupt: its tiles hash to {digest} but "
                f"{ref.sha256} was recorded; delete mosaics/{ref.mosaic_id}.json and re-tile its source"
            )
            raise UnitIntegrityError(msg)
        return list(ref.tile_ids), tiles


class _progress:
    """A rich progress bar over blocks when enabled, else nothing."""

    def __init__(self, enabled: bool, description: str) -> None:
        self.enabled, self.description = enabled, description
        self._bar = None
        self._task = None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.progress import Progress

        self._bar = Progress(transient=False)
        self._bar.__enter__()
        self._task = self._bar.add_task(self.description, total=None)

        def update(done: int, total: int) -> None:
            self._bar.update(self._task, completed=done, total=total)

        return update

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
