"""The write side of the tile store: cut one source's image HDUs and store their tiles.

:meth:`tiling.TileStore.add_mosaic` calls :func:`add_source`. Each image HDU is cut zoom by zoom
(:mod:`tiling._engine`), its tiles appended to Zarr one whole chunk (work unit) at a time by a
:class:`ZoomWriter`, then its metadata table and, last, its mosaic record are written
(:func:`_commit`): a mosaic counts as present only once its record exists.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from hubcat.progress import Progress, reporter
from tiling._config import TilingConfig
from tiling._engine import CutTile, ImageCutter
from tiling._header import normalise_header, raw_cards
from tiling._plan import plan_images
from tiling._source import open_fits, open_source
from tiling._wcs import centres_icrs, pixel_scale_arcsec
from tiling.errors import NonFinitePixelsWarning, SourceError

if TYPE_CHECKING:
    from tiling._store import TileStore

__all__ = ["COLUMNS", "AddReport", "MosaicReport", "ZoomWriter", "add_source"]

#: Metadata columns, in order (the contract of docs/architecture.md plus tiling extras).
COLUMNS = (
    "tile_id", "mosaic_id", "unit_key", "tile_index", "kind", "source", "source_sha256", "hdu",
    "extname", "zoom", "x0", "y0", "box", "ra", "dec", "pixel_scale", "coverage", "telescope",
    "instrument", "detector", "filter", "date_obs", "exptime", "proposal_id", "target", "bunit",
    "tile_sha256", "n_sources", "bkg_median", "bkg_rms", "brightest_flux",
    "brightest_size_arcsec", "brightest_x", "brightest_y", "has_extended", "tiling_digest",
)  # fmt: skip


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
        """One line per mosaic: id, status, tiles per zoom, skipped zooms.

        Returns
        -------
        str
            Newline-separated lines, then one line per skipped HDU with its reason.
        """
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


class ZoomWriter:
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
        n = len(self._ids)  # below the buffer's rows: capacity bounds the tiles of a zoom
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


def add_source(
    store: TileStore,
    source: str | os.PathLike[str],
    *,
    hdu: int | None = None,
    progress: Progress | None = None,
) -> AddReport:
    """Tile one source into ``store``: see :meth:`tiling.TileStore.add_mosaic`."""
    report_progress = reporter(progress)
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
                    reports.append(_add_image(store, src, plan, report_progress))
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


def _add_image(store: TileStore, src, plan, report_progress: Progress) -> MosaicReport:
    cfg = store.config
    mosaic_id = f"{src.sha256[:16]}_h{plan.hdu}"
    if store.has_mosaic(mosaic_id):
        record = store.mosaic_record(mosaic_id)
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
        z: ZoomWriter(
            store._group,
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
    note = f"{src.name} HDU {plan.hdu}"
    finished = 0
    for z in zooms:

        def step(done: int, _total: int, offset: int = finished) -> None:
            report_progress("tiling", offset + done, total, note)

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
        report.tiles_per_zoom[z] = sum(1 for r in rows if r["zoom"] == z and r["kind"] == "grid")
        report.dropped_per_zoom[z] = totals["dropped"][z]
        if cfg.centred_cutouts:
            report.centred_per_zoom[z] = sum(
                1 for r in rows if r["zoom"] == z and r["kind"] == "centred"
            )
        if report.tiles_per_zoom[z] == 0:
            skipped_zooms[z] = f"no tile at zoom {z} reaches min_coverage={cfg.min_coverage}"
    _commit(store, src, plan, mosaic_id, header, params, scale, rows, writers, report)
    return report


def _commit(
    store: TileStore, src, plan, mosaic_id, header, params, scale, rows, writers, report
) -> None:
    import pandas as pd

    cfg = store.config
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
    store.objects.put(f"mosaics/{mosaic_id}.parquet", buf.getvalue())
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
    store.objects.put(f"mosaics/{mosaic_id}.json", json.dumps(record, indent=1).encode())
    store._invalidate()
