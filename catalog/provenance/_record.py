"""The one definition of a provenance leaf's keys: :class:`TileRecord`.

A leaf is the canonical serialisation (RFC 8785) of one tile's record; the keys and their order
here are what the catalogue builds, the leaves module checks and serialises, and verification
compares. Changing them changes every leaf's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["METADATA_KEYS", "OPTIONAL_KEYS", "RECORD_KEYS", "TileRecord"]


@dataclass(frozen=True)
class TileRecord:
    """One tile's provenance record: what its Merkle leaf states.

    Parameters
    ----------
    tile_id, source, source_sha256, hdu, zoom : str / int
        The tile and the mosaic (file, its sha256, HDU) it was cut from, at which zoom.
    box : tuple of int
        ``(x0, y0, width, height)`` of the tile in the mosaic's pixels.
    tiling_digest, tile_sha256 : str
        Digest of the tiling parameters; sha256 of the tile's pixels.
    model, weights_sha256, preprocessing_digest : str
        The embedding model, its weights and its preprocessing and augmentation digest.
    embedding_sha256, embedding_dtype : str
    embedding_shape : tuple of int
    volunteers : tuple of str
        The volunteers whose results agreed (sorted).
    software_version : str
    supersedes : int, optional
        Leaf index of the earlier row of the same tile this row replaces.
    numerical_class : str, optional
        Runtime and precision that computed the vector (``"openvino-fp32"``...).
    """

    tile_id: str
    source: str
    source_sha256: str
    hdu: int | str
    zoom: int
    box: tuple[int, ...]
    tiling_digest: str
    tile_sha256: str
    model: str
    weights_sha256: str
    preprocessing_digest: str
    embedding_sha256: str
    embedding_dtype: str
    embedding_shape: tuple[int, ...]
    volunteers: tuple[str, ...]
    software_version: str
    supersedes: int | None = None
    numerical_class: str | None = None

    def to_dict(self) -> dict:
        """The record as the leaf serialiser takes it (optional keys only when set).

        Returns
        -------
        dict
            Keys in :data:`RECORD_KEYS` order.
        """
        out: dict = {}
        for name in RECORD_KEYS:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        for name in OPTIONAL_KEYS:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


#: Keys a record may carry besides :data:`RECORD_KEYS`: ``supersedes`` is the leaf index of the
#: earlier row of the same tile that this row replaces (its unit was reopened and recomputed
#: after a volunteer was caught); the log stays append-only and the old leaf stays verifiable.
#: ``numerical_class`` names the runtime and precision that computed the row's vector
#: (``"openvino-fp32"``...; replicas are compared within one class).
OPTIONAL_KEYS: tuple[str, ...] = ("supersedes", "numerical_class")
#: Keys every record has, in order.
RECORD_KEYS: tuple[str, ...] = tuple(
    f.name for f in fields(TileRecord) if f.name not in OPTIONAL_KEYS
)
#: Record keys stored under the same name as a catalogue metadata column (verification compares
#: each row's column with its signed leaf).
METADATA_KEYS: tuple[str, ...] = (
    "tile_id",
    "source",
    "source_sha256",
    "hdu",
    "zoom",
    "tiling_digest",
    "tile_sha256",
    "embedding_sha256",
    "software_version",
)
