"""Work units: what a unit of the tile store is (:class:`UnitRef`) and where its bytes are (:class:`UnitChunk`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["UnitChunk", "UnitRef"]


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


@dataclass(frozen=True)
class UnitChunk:
    """Where one work unit's tiles are stored: one raw Zarr chunk of float32 tiles.

    A reader that holds only the chunk's bytes (a volunteer given a pre-signed URL) decodes them
    as ``numpy.frombuffer(data, dtype).reshape(chunk_shape)[offset : offset + n_tiles]``; an
    absent chunk (Zarr writes none made only of the fill value) is ``fill_value`` everywhere.
    """

    #: Object key of the chunk in the tile store.
    key: str
    #: Shape of the whole chunk, ``(rows, 224, 224)``.
    chunk_shape: tuple[int, ...]
    #: numpy dtype of the raw bytes, ``"<f4"`` or ``">f4"``.
    dtype: str
    #: First row of the unit in the chunk.
    offset: int
    #: Value of every element of an absent chunk.
    fill_value: float

    def to_dict(self) -> dict:
        """The fields as JSON-ready values.

        Returns
        -------
        dict
            ``key``, ``chunk_shape`` (a list), ``dtype``, ``offset`` and ``fill_value``.
        """
        return {
            "key": self.key,
            "chunk_shape": list(self.chunk_shape),
            "dtype": self.dtype,
            "offset": self.offset,
            "fill_value": self.fill_value,
        }
