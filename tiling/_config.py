"""Configuration of the tiling stage: one dataclass, with a digest of everything that changes output."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields

from tiling.errors import TilingError

__all__ = ["TILE_SIZE", "TilingConfig"]

#: Side of a stored tile in pixels (the input size of the embedding models).
TILE_SIZE = 224

#: Version of the tile store layout and of the tiling algorithm (part of the digest).
FORMAT_VERSION = 1

#: Target side, in source pixels, of one Dask block (rounded to a multiple of the grid period).
_BLOCK_TARGET = 1024


def _nodigest(default: object) -> object:
    return field(default=default, metadata={"digest": False})


@dataclass(frozen=True)
class TilingConfig:
    """Parameters of the tiling stage.

    Every field that changes a stored byte or a metadata value enters :meth:`digest`; fields that
    only change speed (``workers``) do not.

    Parameters
    ----------
    tile_size : int
        Side of a tile in pixels after binning (224, the models' input size).
    zooms : tuple of int
        Binning factors; a tile at zoom ``z`` covers ``tile_size * z`` source pixels on a side.
    stride : int or None
        Step between neighbouring tiles, in tile pixels (so ``stride * z`` source pixels at zoom
        ``z``). ``None`` means ``tile_size`` (no overlap); smaller values make tiles overlap.
    min_coverage : float
        Minimum fraction (0..1) of a tile's box that must be valid footprint for the tile to be
        kept. The default 0.5 keeps every tile whose content is mostly sky: below half, the
        embedding of a tile is dominated by the shape of the footprint edge (a bright-to-zero
        step) rather than by what is on the sky, and such tiles cluster together as spurious
        "neighbours" of each other; above half, edge tiles that still show mostly sky are kept
        with their mask, so a north-up drizzled mosaic loses at most half a tile along its edges.
    stretch_percentiles : tuple of float
        Lower and upper percentiles (0..100) of the mosaic's valid pixels that map to 0 and 1
        before the asinh stretch.
    asinh_a : float
        Softening parameter ``a`` of ``asinh(v / a) / asinh(1 / a)`` (astropy's ``AsinhStretch``
        convention): smaller values compress the bright end more.
    stretch_sample : int
        Maximum number of pixels sampled (every k-th row) to estimate the percentiles.
    unit_size : int
        Tiles per Zarr chunk, which is one grid work unit.
    detect_nsigma : float
        Detection threshold above the tile's sigma-clipped background, in background sigmas.
    detect_npixels : int
        Minimum number of connected pixels of a detected source.
    extended_sigma_arcsec : float
        A detected source whose flux-weighted second-moment radius exceeds this (arcsec) is
        "extended" (about 3x the radius of HST's optical PSF core).
    measure_sources : bool
        Measure background and detect sources in every tile (photutils); when False the
        source columns are empty (NaN / 0) and tiling is several times faster.
    centred_cutouts : bool
        Also cut one tile centred on each detected extended source (``kind == "centred"``;
        needs ``measure_sources``).
    workers : int
        Dask threads used to cut blocks (speed only).
    """

    tile_size: int = TILE_SIZE
    zooms: tuple[int, ...] = (1, 2, 4)
    stride: int | None = None
    min_coverage: float = 0.5
    stretch_percentiles: tuple[float, float] = (0.5, 99.9)
    asinh_a: float = 0.1
    stretch_sample: int = 1 << 20
    unit_size: int = 256
    detect_nsigma: float = 3.0
    detect_npixels: int = 5
    extended_sigma_arcsec: float = 0.15
    measure_sources: bool = True
    centred_cutouts: bool = False
    workers: int = _nodigest(2)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "zooms", tuple(int(z) for z in self.zooms))
        object.__setattr__(
            self, "stretch_percentiles", tuple(float(p) for p in self.stretch_percentiles)
        )
        if self.tile_size < 8:
            msg = f"tile_size={self.tile_size!r} is too small; use the models' input size, 224"
            raise TilingError(msg)
        if (
            not self.zooms
            or any(z < 1 for z in self.zooms)
            or len(set(self.zooms)) != len(self.zooms)
        ):
            msg = f"zooms={self.zooms!r} must be distinct binning factors >= 1, e.g. (1, 2, 4)"
            raise TilingError(msg)
        if self.stride is not None and not 1 <= self.stride <= self.tile_size:
            msg = f"stride={self.stride!r} must be between 1 and tile_size={self.tile_size} (tile pixels)"
            raise TilingError(msg)
        if not 0.0 < self.min_coverage <= 1.0:
            msg = f"min_coverage={self.min_coverage!r} must be in (0, 1]; the default is 0.5"
            raise TilingError(msg)
        lo, hi = self.stretch_percentiles
        if not 0.0 <= lo < hi <= 100.0:
            msg = f"stretch_percentiles={self.stretch_percentiles!r} must satisfy 0 <= low < high <= 100"
            raise TilingError(msg)
        if self.asinh_a <= 0:
            msg = f"asinh_a={self.asinh_a!r} must be positive (astropy's default is 0.1)"
            raise TilingError(msg)
        if self.unit_size < 1:
            msg = f"unit_size={self.unit_size!r} must be a positive number of tiles"
            raise TilingError(msg)
        if self.stretch_sample < 1000:
            msg = f"stretch_sample={self.stretch_sample!r} is too small for robust percentiles; use >= 1000"
            raise TilingError(msg)
        if self.centred_cutouts and not self.measure_sources:
            msg = "centred_cutouts=True needs measure_sources=True (cutouts centre on detected sources)"
            raise TilingError(msg)
        if self.workers < 1:
            msg = f"workers={self.workers!r} must be >= 1"
            raise TilingError(msg)

    # -- derived values -------------------------------------------------------------------
    @property
    def step(self) -> int:
        """Stride in tile pixels (``tile_size`` when ``stride`` is None)."""
        return self.tile_size if self.stride is None else self.stride

    def box(self, zoom: int) -> int:
        """Side, in source pixels, of the box a tile at ``zoom`` covers.

        Parameters
        ----------
        zoom : int
            Binning factor (1 = native pixels).

        Returns
        -------
        int
            ``tile_size * zoom``.
        """
        return self.tile_size * zoom

    def source_stride(self, zoom: int) -> int:
        """Distance, in source pixels, between neighbouring tile origins at ``zoom``.

        Parameters
        ----------
        zoom : int
            Binning factor (1 = native pixels).

        Returns
        -------
        int
            ``step * zoom``.
        """
        return self.step * zoom

    @property
    def block_size(self) -> int:
        """Side of one Dask block in source pixels: a multiple of every zoom's stride."""
        period = math.lcm(*(self.source_stride(z) for z in self.zooms))
        return period * max(1, round(_BLOCK_TARGET / period))

    # -- provenance -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Every field as JSON-compatible values (lists for tuples).

        Returns
        -------
        dict
            Field name to value; :meth:`from_dict` inverts it.
        """
        out = asdict(self)
        out["zooms"] = list(self.zooms)
        out["stretch_percentiles"] = list(self.stretch_percentiles)
        return out

    def digest_fields(self) -> dict:
        """The fields that change output, plus the format version.

        Returns
        -------
        dict
            :meth:`to_dict` without the display-only fields (``metadata={"digest": False}``), plus ``format_version``.
        """
        data = {
            f.name: self.to_dict()[f.name] for f in fields(self) if f.metadata.get("digest", True)
        }
        data["format_version"] = FORMAT_VERSION
        return data

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`digest_fields`.

        Returns
        -------
        str
            64 hex digits; equal digests mean equal output-changing parameters.
        """
        text = json.dumps(self.digest_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict) -> TilingConfig:
        """Rebuild a config from :meth:`to_dict` output (unknown keys are an error).

        Parameters
        ----------
        data : dict
            As written by :meth:`to_dict`; ``format_version`` and the old display-only
            ``progress`` key are ignored, missing fields take their defaults.

        Returns
        -------
        TilingConfig

        Raises
        ------
        TilingError
            If ``data`` has a key that is not a field (a store written by a newer hubcat).
        """
        known = {f.name for f in fields(cls)}
        # ``progress`` was a display-only field in stores written by 0.1: ignored
        unknown = sorted(set(data) - known - {"format_version", "progress"})
        if unknown:
            msg = f"unknown tiling parameters {unknown}; this store was written by a newer hubcat"
            raise TilingError(msg)
        kwargs = {k: v for k, v in data.items() if k in known}
        if "zooms" in kwargs:
            kwargs["zooms"] = tuple(kwargs["zooms"])
        if "stretch_percentiles" in kwargs:
            kwargs["stretch_percentiles"] = tuple(kwargs["stretch_percentiles"])
        return cls(**kwargs)
