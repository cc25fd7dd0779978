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

import numpy as np

from hubcat.errors import StoreNotFoundError
from hubcat.progress import Progress
from hubcat.storage import ObjectStore, open_object_store, zarr_store
from tiling._config import FORMAT_VERSION, TilingConfig
from tiling._ingest import COLUMNS, AddReport, add_source
from tiling._units import UnitChunk, UnitRef
from tiling._wcs import box_wcs, wcs_from_header_text
from tiling.augment import AUGMENTATIONS
from tiling.errors import (
    TileNotFoundError,
    TilingError,
    UnitIntegrityError,
)

__all__ = ["TileStore"]


class TileStore:
    """A Zarr v3 store of 224x224 tiles with per-tile metadata (see the module docstring).

    Create with :meth:`create`, :meth:`open` or :meth:`open_or_create`; never instantiate
    directly.

    Parameters
    ----------
    objects : ObjectStore
        The object store at the tile store's root.
    config : TilingConfig
        The tiling parameters the store was made with.
    group : zarr.Group
        The opened root Zarr group.
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

        Parameters
        ----------
        uri : str or path-like
            Local folder or ``s3://bucket/prefix`` of the new store.
        config : TilingConfig or None
            Tiling parameters (None: the defaults); recorded with their digest in the root
            group's attributes.

        Returns
        -------
        TileStore
            The new, empty, writable store.

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

        Parameters
        ----------
        uri : str or path-like
            Local folder or ``s3://bucket/prefix`` of the store.
        read_only : bool
            Open the Zarr group read-only (mode ``"r"`` instead of ``"r+"``).

        Returns
        -------
        TileStore
            The store, with the :class:`TilingConfig` it was made with.

        Raises
        ------
        StoreNotFoundError
            If there is no tile store at ``uri``.
        TilingError
            If ``uri`` holds a Zarr group that is not a hubcat tile store, or its tiling
            parameters are unknown to this version.
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

        Parameters
        ----------
        uri : str or path-like
            Local folder or ``s3://bucket/prefix`` of the store.
        config : TilingConfig or None
            Parameters for a new store, and the ones an existing store must match; None
            accepts an existing store's parameters (and creates with the defaults).

        Returns
        -------
        TileStore
            The opened or new store, writable.

        Raises
        ------
        TilingError
            If the existing store was made with parameters whose digest differs from ``config``
            (the message lists the differing fields).
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
        """The stored record of one mosaic (header cards, WCS, stretch, units).

        Parameters
        ----------
        mosaic_id : str
            ``<first 16 hex of the source sha256>_h<hdu>``.

        Returns
        -------
        dict
            The JSON record ``mosaics/<mosaic_id>.json``.

        Raises
        ------
        TileNotFoundError
            If the mosaic is not (completely) stored.
        """
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
        """Whether a mosaic is completely stored (its record exists).

        Parameters
        ----------
        mosaic_id : str
            ``<first 16 hex of the source sha256>_h<hdu>``.

        Returns
        -------
        bool
            False also for an interrupted add (arrays without a record).
        """
        return self._objects.exists(f"mosaics/{mosaic_id}.json")

    # -- adding ------------------------------------------------------------------------------
    def add_mosaic(
        self,
        source: str | os.PathLike[str],
        *,
        hdu: int | None = None,
        progress: Progress | None = None,
    ) -> AddReport:
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
        progress : callable, optional
            Called as ``progress("tiling", blocks_done, blocks_total, note)`` while cutting
            (see :mod:`hubcat.progress`).

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
        return add_source(self, source, hdu=hdu, progress=progress)

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

        Parameters
        ----------
        tile_id : str
            ``<mosaic_id>_z<zoom>_x<x0>_y<y0>``.

        Returns
        -------
        astropy.wcs.WCS
            Pixel ``(i, j)`` of the tile (0-based) is the centre of its binned pixel.

        Raises
        ------
        TileNotFoundError
            If the tile is not in the store.
        """
        row = self._row(tile_id)
        record = self.mosaic_record(row["mosaic_id"])
        source_wcs = wcs_from_header_text(record["wcs_header"])
        return box_wcs(
            source_wcs, int(row["x0"]), int(row["y0"]), int(row["zoom"]), self.config.tile_size
        )

    def units(self) -> list[UnitRef]:
        """Every work unit (Zarr chunk) of the store, by mosaic, zoom and chunk.

        Returns
        -------
        list of UnitRef
            Sorted by mosaic id, then in the order of each mosaic record.
        """
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
        """The :class:`UnitRef` of ``unit_key``.

        Parameters
        ----------
        unit_key : str
            ``<mosaic_id>/...`` as listed by :meth:`units`; only that mosaic's record is read.

        Returns
        -------
        UnitRef

        Raises
        ------
        TileNotFoundError
            If the unit (or its mosaic) is not in the store.
        """
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

    def unit_chunk(self, unit: UnitRef | str) -> UnitChunk:
        """Where ``unit``'s tiles are stored, for readers that fetch raw chunk bytes.

        Parameters
        ----------
        unit : UnitRef or str
            The unit, or its key.

        Returns
        -------
        UnitChunk

        Raises
        ------
        TileNotFoundError
            If the unit does not exist.
        TilingError
            If its array is stored in a way a reader of raw bytes cannot decode (a compressor,
            sharding, another dtype), or the unit spans two chunks.
        """
        ref = self.unit(unit) if isinstance(unit, str) else unit
        array = self._array("tiles", ref.mosaic_id, ref.zoom)
        meta = array.metadata
        codecs = list(getattr(meta, "codecs", ()))
        where = f"{self.uri}/{array.path}"
        if (
            str(array.dtype) != "float32"
            or len(codecs) != 1
            or type(codecs[0]).__name__ != "BytesCodec"
        ):
            msg = (
                f"{where} is stored as {array.dtype} with codecs {[type(c).__name__ for c in codecs]}; "
                "readers of raw chunks need uncompressed float32 chunks (the bytes codec only), as "
                "TileStore writes them; re-tile into a new store"
            )
            raise TilingError(msg)
        rows = int(array.chunks[0])
        first = ref.chunk * self.config.unit_size
        index = first // rows
        if first - index * rows + len(ref.tile_ids) > rows:
            msg = f"unit {ref.unit_key} spans more than one Zarr chunk of {where}"
            raise TilingError(msg)
        coords = (index,) + (0,) * (len(array.chunks) - 1)
        endian = str(getattr(codecs[0].endian, "value", codecs[0].endian) or "little")
        return UnitChunk(
            key=f"{array.path}/{meta.encode_chunk_key(coords)}",
            chunk_shape=tuple(int(c) for c in array.chunks),
            dtype="<f4" if endian == "little" else ">f4",
            offset=first - index * rows,
            fill_value=float(meta.fill_value or 0.0),
        )

    def read_unit(self, unit_key: str) -> tuple[list[str], np.ndarray]:
        """Read one work unit (one Zarr chunk) and check its sha256.

        Parameters
        ----------
        unit_key : str
            The unit's key, as listed by :meth:`units`.

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
