"""Cut one image HDU into tiles, block by block, with Dask; memory stays flat.

The image is never loaded whole. The grid of tile origins at zoom ``z`` is ``(i * s_z, j * s_z)``
with ``s_z = stride * z`` source pixels; the last column/row of tiles may overhang the image
edge (pixels outside the image are outside the footprint, so the coverage threshold decides).
Tile origins are grouped into square blocks of ``block_size`` (about 1024) source pixels, a multiple of every
zoom's stride, so each block holds whole tiles of every zoom; a block reads its pixels plus a
``halo`` (``(tile - stride) * zmax`` source pixels right and below) so overlapping tiles are
whole. One Dask task per block (threaded scheduler, ``workers`` threads) reads its region
(positioned reads locally, ranged reads on S3), computes the footprint, and cuts, bins, stretches and
measures its tiles. Blocks are computed in windows of ``2 * workers`` (the next window is cut
while the previous one's tiles are written) and their tiles written in block order, so at most
two windows of blocks are in memory whatever the mosaic size, and the tile order (hence the
work units) is deterministic.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from tiling._config import TilingConfig
from tiling._pixels import NO_SOURCES, StretchParams, bin_box, source_stats, stretch
from tiling._plan import ImagePlan
from tiling._source import PixelReader, Source
from tiling.errors import SourceError

__all__ = ["CutTile", "ImageCutter"]


#: Bands of rows read to estimate the stretch limits.
SAMPLE_BANDS = 16


@dataclass
class CutTile:
    """One cut tile before it is written: pixels, mask and per-tile metadata."""

    zoom: int
    x0: int
    y0: int
    kind: str
    coverage: float
    pixels: np.ndarray  # float32 (T, T), little-endian
    mask: np.ndarray  # bool (T, T)
    stats: dict = field(default_factory=dict)
    sha256: str = ""  # of ``pixels``' bytes (hashed in the worker thread, not the writer)


@dataclass
class _BlockResult:
    tiles: list[CutTile]
    candidates: dict[int, int]
    dropped: dict[int, int]
    nonfinite_inside: int
    extended: list[tuple[int, float, float]]  # (zoom, x, y) source-pixel centroids


def footprint(values: np.ndarray, weight: np.ndarray | None, kind: str) -> tuple[np.ndarray, int]:
    """Valid pixels of a region and the number of NaN/inf pixels inside the footprint.

    ``WHT``/``CTX``: inside where the weight/context is positive (non-zero for CTX) and finite;
    valid where also the science value is finite. Otherwise: valid where finite and non-zero,
    and infinite values count as bad pixels inside the footprint.
    """
    finite = np.isfinite(values)
    if weight is not None:
        w_ok = np.isfinite(weight)
        inside = (w_ok & (weight > 0)) if kind == "WHT" else (w_ok & (weight != 0))
        valid = inside & finite
        return valid, int(np.count_nonzero(inside & ~finite))
    valid = finite & (values != 0)
    return valid, int(np.count_nonzero(np.isinf(values)))


class ImageCutter:
    """Tile one image HDU of an opened source (see the module docstring).

    Parameters
    ----------
    src : Source
    plan : ImagePlan
    config : TilingConfig
    pixel_scale : float
        Source pixel scale in arcsec/px.
    """

    def __init__(
        self, src: Source, plan: ImagePlan, config: TilingConfig, pixel_scale: float
    ) -> None:
        self.src, self.plan, self.config = src, plan, config
        self.reader = PixelReader(src, plan.header, plan.offset)
        self.weights = (
            PixelReader(src, plan.footprint_header, plan.footprint_offset)
            if plan.footprint_hdu is not None
            else None
        )
        self.pixel_scale = pixel_scale
        self.ny, self.nx = self.reader.shape
        self.params: StretchParams | None = None
        self.valid_sampled = 0

    # -- reading ------------------------------------------------------------------------------
    def read_region(self, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray, int]:
        values = self.reader.read(y0, y1, x0, x1)
        weight = self.weights.read(y0, y1, x0, x1) if self.weights is not None else None
        valid, bad = footprint(values, weight, self.plan.footprint_kind)
        return values, valid, bad

    # -- stretch limits -------------------------------------------------------------------------
    def measure_stretch(self) -> StretchParams:
        """Percentile limits from evenly spaced bands of rows (at most ``stretch_sample`` pixels).

        Up to ``SAMPLE_BANDS`` bands of consecutive rows are read (few ranged requests on S3);
        the rule depends only on the image shape, so a file gives the same limits, hence the
        same tile bytes, wherever it is read from.

        Raises
        ------
        SourceError
            If the image has no valid pixel at all.
        """
        cfg = self.config
        rows = min(self.ny, math.ceil(cfg.stretch_sample / self.nx))
        bands = min(SAMPLE_BANDS, rows)
        height = math.ceil(rows / bands)
        starts = np.unique(np.linspace(0, self.ny - height, bands).round().astype(int))
        samples = []
        for r in starts:
            values, valid, _ = self.read_region(int(r), int(r) + height, 0, self.nx)
            samples.append(values[valid])
        good = np.concatenate(samples) if samples else np.empty(0)
        sampled_all = rows >= self.ny
        if good.size < 1000 and not sampled_all:  # a small footprint can slip between sampled rows
            good = self._all_valid()
        if good.size == 0:
            how = (
                f"{self.plan.footprint_kind} is 0 everywhere or the science pixels are NaN"
                if self.weights is not None
                else "every pixel is NaN, infinite or 0"
            )
            msg = (
                f"has no valid pixel in HDU {self.plan.hdu} ({self.plan.extname or 'image'}, "
                f"{self.nx}x{self.ny}): {how}; nothing to tile"
            )
            raise SourceError(self.src.uri, msg)
        self.valid_sampled = int(good.size)
        lo, hi = np.percentile(good, cfg.stretch_percentiles, overwrite_input=True)  # our copy
        self.params = StretchParams(float(lo), float(hi), float(cfg.asinh_a))
        return self.params

    def _all_valid(self) -> np.ndarray:
        out = []
        rows = max(1, (1 << 22) // max(self.nx, 1))
        for y in range(0, self.ny, rows):
            values, valid, _ = self.read_region(y, min(self.ny, y + rows), 0, self.nx)
            out.append(values[valid])
        return np.concatenate(out) if out else np.empty(0)

    # -- grid -------------------------------------------------------------------------------
    def origins(self, zoom: int, axis_len: int) -> np.ndarray:
        """Tile origins along one axis at ``zoom`` (empty when the axis is shorter than a box)."""
        box, step = self.config.box(zoom), self.config.source_stride(zoom)
        if axis_len < box:
            return np.empty(0, dtype=np.int64)
        n = math.ceil((axis_len - box) / step) + 1
        return np.arange(n, dtype=np.int64) * step

    def grid_candidates(self, zoom: int) -> int:
        """Number of grid tile origins at ``zoom`` (an upper bound on its grid tiles)."""
        return len(self.origins(zoom, self.nx)) * len(self.origins(zoom, self.ny))

    def zooms_fitting(self) -> tuple[list[int], dict[int, str]]:
        """Zooms at which at least one whole box fits, and why the others are skipped."""
        ok, skipped = [], {}
        for z in self.config.zooms:
            box = self.config.box(z)
            if self.nx < box or self.ny < box:
                skipped[z] = (
                    f"image {self.nx}x{self.ny} px is smaller than one tile at zoom {z} "
                    f"({box}x{box} source px)"
                )
            else:
                ok.append(z)
        return ok, skipped

    def blocks(self, zooms: list[int]) -> list[tuple[int, int]]:
        w = self.config.block_size
        last_x = max(int(self.origins(z, self.nx)[-1]) for z in zooms)
        last_y = max(int(self.origins(z, self.ny)[-1]) for z in zooms)
        return [(by, bx) for by in range(0, last_y + 1, w) for bx in range(0, last_x + 1, w)]

    # -- one block ----------------------------------------------------------------------------
    def cut_block(self, by: int, bx: int, zooms: list[int]) -> _BlockResult:
        cfg = self.config
        w = cfg.block_size
        tiles: list[CutTile] = []
        candidates = dict.fromkeys(zooms, 0)
        dropped = dict.fromkeys(zooms, 0)
        extended: list[tuple[int, float, float]] = []
        spans = {}
        for z in zooms:
            xs = self.origins(z, self.nx)
            ys = self.origins(z, self.ny)
            spans[z] = (ys[(ys >= by) & (ys < by + w)], xs[(xs >= bx) & (xs < bx + w)])
        y_end = max(
            (int(ys[-1]) + cfg.box(z) for z, (ys, _) in spans.items() if ys.size), default=by
        )
        x_end = max(
            (int(xs[-1]) + cfg.box(z) for z, (_, xs) in spans.items() if xs.size), default=bx
        )
        values, valid, bad = self.read_region(by, y_end, bx, x_end)
        for z in zooms:
            ys, xs = spans[z]
            box = cfg.box(z)
            for y0 in ys:
                for x0 in xs:
                    candidates[z] += 1
                    sl = np.s_[y0 - by : y0 - by + box, x0 - bx : x0 - bx + box]
                    tile = self._make_tile(values[sl], valid[sl], z, int(x0), int(y0), "grid")
                    if tile is None:
                        dropped[z] += 1
                        continue
                    tiles.append(tile)
                    step = cfg.source_stride(z)
                    for ex, ey in tile.stats.pop("extended_xy", []):
                        sx, sy = x0 + (ex + 0.5) * z - 0.5, y0 + (ey + 0.5) * z - 0.5
                        # each source once: from the tile whose stride cell holds its centroid
                        if x0 <= sx < x0 + step and y0 <= sy < y0 + step:
                            extended.append((z, float(sx), float(sy)))
        return _BlockResult(tiles, candidates, dropped, bad, extended)

    def _make_tile(
        self, values: np.ndarray, valid: np.ndarray, zoom: int, x0: int, y0: int, kind: str
    ) -> CutTile | None:
        cfg = self.config
        coverage = float(np.count_nonzero(valid)) / valid.size
        if coverage < cfg.min_coverage:
            return None
        binned, mask = bin_box(values, valid, zoom)
        pixels = np.ascontiguousarray(stretch(binned, self.params, mask), dtype="<f4")
        digest = hashlib.sha256(pixels.data).hexdigest()
        if not cfg.measure_sources:
            return CutTile(zoom, x0, y0, kind, coverage, pixels, mask, dict(NO_SOURCES), digest)
        stats = source_stats(
            binned,
            mask,
            zoom=zoom,
            pixel_scale_arcsec=self.pixel_scale * zoom,
            nsigma=cfg.detect_nsigma,
            npixels=cfg.detect_npixels,
            extended_sigma_arcsec=cfg.extended_sigma_arcsec,
        )
        return CutTile(zoom, x0, y0, kind, coverage, pixels, mask, stats, digest)

    def cut_box(self, zoom: int, x0: int, y0: int, kind: str) -> CutTile | None:
        """Cut one tile at an arbitrary box origin (source-centred cutouts)."""
        box = self.config.box(zoom)
        values, valid, _ = self.read_region(y0, y0 + box, x0, x0 + box)
        tile = self._make_tile(values, valid, zoom, x0, y0, kind)
        if tile is not None:
            tile.stats.pop("extended_xy", None)
        return tile

    # -- driver -------------------------------------------------------------------------------
    def run(
        self,
        zooms: list[int],
        on_block: Callable[[_BlockResult], None],
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Cut every block with Dask (threads) and hand each result to ``on_block`` in order.

        Blocks are computed in windows of ``2 * workers``; while the caller's ``on_block``
        handles one window's tiles (appending, and writing full units to Zarr, in this
        thread), the next window is already being cut, so the writes do not leave the
        cutting threads idle. At most two windows of block results are in memory.
        """
        from concurrent.futures import ThreadPoolExecutor

        import dask

        blocks = self.blocks(zooms)
        window = 2 * self.config.workers
        windows = [blocks[i : i + window] for i in range(0, len(blocks), window)]

        def compute(part: list[tuple[int, int]]) -> tuple[_BlockResult, ...]:
            tasks = [dask.delayed(self.cut_block, pure=False)(by, bx, zooms) for by, bx in part]
            return dask.compute(*tasks, scheduler="threads", num_workers=self.config.workers)

        done = 0
        with ThreadPoolExecutor(1, thread_name_prefix="hubcat-cut") as ahead:
            pending = ahead.submit(compute, windows[0]) if windows else None
            for k in range(len(windows)):
                results = pending.result()
                if k + 1 < len(windows):
                    pending = ahead.submit(compute, windows[k + 1])
                for result in results:
                    on_block(result)
                done += len(results)
                if progress is not None:
                    progress(done, len(blocks))

    def centred(
        self, centroids: list[tuple[int, float, float]], seen: set[tuple[int, int, int]]
    ) -> Iterator[CutTile]:
        """Tiles centred on extended sources (box centre nearest each centroid)."""
        import dask

        boxes = []
        for z, sx, sy in centroids:
            half = (self.config.box(z) - 1) / 2.0
            key = (z, round(sx - half), round(sy - half))
            if key not in seen:
                seen.add(key)
                boxes.append(key)
        window = 4 * self.config.workers
        for start in range(0, len(boxes), window):
            tasks = [
                dask.delayed(self.cut_box, pure=False)(z, x0, y0, "centred")
                for z, x0, y0 in boxes[start : start + window]
            ]
            for tile in dask.compute(*tasks, scheduler="threads", num_workers=self.config.workers):
                if tile is not None:
                    yield tile
