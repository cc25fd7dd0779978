"""Accepted embedding vectors stored next to the tiles, one record per work unit."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import numpy as np

from embeddings.errors import EmbeddingStoreError
from hubcat.errors import StoreNotFoundError
from hubcat.storage import ObjectStore, open_object_store

__all__ = ["EmbeddingStore", "UnitRecord"]

_DIGEST = re.compile(r"^[0-9a-f]{16,64}$")
FORMAT = "hubcat-embeddings/1"


@dataclass(frozen=True)
class UnitRecord:
    """What the store holds about one unit (everything but the vectors).

    Attributes
    ----------
    unit_key : str
    tile_ids : tuple of str
    volunteers : tuple of str
        Volunteers whose results agreed for this unit.
    sha256 : str
        sha256 of the vectors' float32 little-endian C-order bytes.
    shape : tuple of int
        ``(n_tiles, dim)``.
    numerical_class : str
        Runtime and precision that computed the vectors (:func:`embeddings.numerical_class`);
        "" in records written before it was recorded.
    """

    unit_key: str
    tile_ids: tuple[str, ...]
    volunteers: tuple[str, ...]
    sha256: str
    shape: tuple[int, int]
    numerical_class: str = ""


class EmbeddingStore:
    """Vectors of one model digest under ``embeddings/<model_digest>/`` of a tile store.

    Each unit is one JSON record (tile ids, volunteers, sha256, shape) plus one content-addressed
    vector object. The vectors are written first and the record last, each with an atomic
    :meth:`~hubcat.storage.ObjectStore.put`, so a unit is visible whole or not at all. Works on
    every :class:`~hubcat.storage.ObjectStore` (local folder or S3).

    Parameters
    ----------
    tile_store_uri : str, path-like, ObjectStore or TileStore
        Root of the tile store (``/path`` or ``s3://bucket/prefix``).
    model_digest : str or EmbeddingModel
        :attr:`EmbeddingModel.digest` of the model that made the vectors (hex). Given a model,
        its description is also recorded in ``model.json``.
    """

    def __init__(self, tile_store_uri: Any, model_digest: Any) -> None:
        model = None
        if hasattr(model_digest, "digest") and hasattr(model_digest, "record"):
            model, model_digest = model_digest, model_digest.digest
        if not isinstance(model_digest, str) or not _DIGEST.match(model_digest):
            msg = (
                f"model digest {model_digest!r} is not a lowercase hex digest; "
                "pass EmbeddingModel.digest"
            )
            raise EmbeddingStoreError(msg)
        self.model_digest = model_digest
        self.root: ObjectStore = _object_store(tile_store_uri).child(f"embeddings/{model_digest}")
        if model is not None and not self.root.exists("model.json"):
            from embeddings._model import describe

            self.root.put("model.json", _dumps({"format": FORMAT, **describe(model)}))

    @staticmethod
    def digests(tile_store: Any) -> list[str]:
        """Digests of the models whose vectors are stored beside ``tile_store``, sorted.

        Parameters
        ----------
        tile_store : str, path-like, ObjectStore or TileStore

        Returns
        -------
        list of str
        """
        base = _object_store(tile_store)
        return sorted({k.split("/", 2)[1] for k in base.list("embeddings/") if k.count("/") >= 2})

    @classmethod
    def find(cls, tile_store: Any, model_digest: str | None = None) -> EmbeddingStore:
        """The embedding store of ``tile_store``: the only one, or the one whose model digest
        starts with ``model_digest``.

        Parameters
        ----------
        tile_store : str, path-like, ObjectStore or TileStore
        model_digest : str or None
            A model digest or its first characters.

        Returns
        -------
        EmbeddingStore

        Raises
        ------
        EmbeddingStoreError
            No embeddings (or none of that digest), or several and none chosen (the message
            lists the digests).
        """
        uri = getattr(tile_store, "uri", tile_store)
        digests = cls.digests(tile_store)
        if model_digest:
            digests = [d for d in digests if d.startswith(model_digest)]
        if not digests:
            which = f" with digest {model_digest}" if model_digest else ""
            msg = (
                f"no embeddings{which} in the tile store {uri}; embed its tiles first "
                "(`hubcat run`, `hubcat embed` or the grid)"
            )
            raise EmbeddingStoreError(msg)
        if len(digests) > 1:
            msg = (
                f"the tile store {uri} holds embeddings of several models {digests}; "
                "choose one with --model-digest"
            )
            raise EmbeddingStoreError(msg)
        return cls(tile_store, digests[0])

    @property
    def uri(self) -> str:
        """URI of this store's folder."""
        return self.root.uri

    @staticmethod
    def _record_key(unit_key: str) -> str:
        return f"units/{quote(unit_key, safe='')}.json"

    def has(self, unit_key: str) -> bool:
        """Whether the vectors of ``unit_key`` are stored (whole).

        Parameters
        ----------
        unit_key : str
            The work unit's key (as in :meth:`tiling.TileStore.units`).

        Returns
        -------
        bool
            True once the unit's record exists (it is written after its vectors).
        """
        return self.root.exists(self._record_key(unit_key))

    def revoke(self, unit_key: str) -> bool:
        """Withdraw the vectors of ``unit_key`` (they were accepted on a word later disproved).

        The vector bytes stay (they are content-addressed and may be shared); the unit's record
        goes, so the unit counts as not embedded and is recomputed by the next run.

        Parameters
        ----------
        unit_key : str

        Returns
        -------
        bool
            Whether the unit was stored.
        """
        key = self._record_key(unit_key)
        existed = self.root.exists(key)
        self.root.delete(key)
        return existed

    def unit_keys(self) -> list[str]:
        """Keys of every stored unit, sorted.

        Returns
        -------
        list of str
            Unit keys whose record exists.
        """
        keys = []
        for key in self.root.list("units/"):
            if key.endswith(".json"):
                keys.append(unquote(key.removeprefix("units/").removesuffix(".json")))
        return sorted(keys)

    def __len__(self) -> int:
        return len(self.unit_keys())

    def write(
        self,
        unit_key: str,
        tile_ids: Sequence[str],
        vectors: np.ndarray,
        volunteers: Sequence[str] = (),
        numerical_class: str = "",
    ) -> str:
        """Store the accepted vectors of one unit; return their sha256.

        Parameters
        ----------
        unit_key : str
            Key of the unit (``UnitRef.unit_key`` of the tile store).
        tile_ids : sequence of str, length N
        vectors : numpy.ndarray, shape (N, D), float32
            Finite unit vectors, row i for ``tile_ids[i]``.
        volunteers : sequence of str
            Volunteers whose results agreed (empty for an in-process run).
        numerical_class : str
            The numerical class of the replicas that agreed (``EmbeddingModel.numerical_class``).

        Returns
        -------
        str
            sha256 (hex) of the vectors' float32 little-endian bytes.

        Raises
        ------
        EmbeddingStoreError
            Inconsistent lengths, wrong dtype/shape, non-finite values, or a different result
            already stored for this unit (accepted results are never replaced).
        """
        if not isinstance(unit_key, str) or not unit_key:
            msg = f"unit key {unit_key!r} must be a non-empty string"
            raise EmbeddingStoreError(msg)
        tile_ids = tuple(str(t) for t in tile_ids)
        volunteers = tuple(str(v) for v in volunteers)
        if not isinstance(vectors, np.ndarray) or vectors.dtype != np.float32 or vectors.ndim != 2:
            got = (
                f"{vectors.dtype} {vectors.shape}"
                if isinstance(vectors, np.ndarray)
                else type(vectors).__name__
            )
            msg = f"unit {unit_key}: vectors must be a float32 array of shape (N, D), got {got}"
            raise EmbeddingStoreError(msg)
        if vectors.shape[0] != len(tile_ids):
            msg = f"unit {unit_key}: {vectors.shape[0]} vectors for {len(tile_ids)} tile ids"
            raise EmbeddingStoreError(msg)
        if len(set(tile_ids)) != len(tile_ids):
            msg = f"unit {unit_key}: duplicate tile ids"
            raise EmbeddingStoreError(msg)
        if not np.isfinite(vectors).all():
            msg = f"unit {unit_key}: vectors contain NaN or infinite values; refusing to store them"
            raise EmbeddingStoreError(msg)
        data = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
        digest = hashlib.sha256(data).hexdigest()
        if self.has(unit_key):
            old = self.record(unit_key)
            if old.sha256 == digest and old.tile_ids == tile_ids:
                return digest
            msg = (
                f"unit {unit_key} is already stored in {self.uri} with other vectors "
                f"(sha256 {old.sha256[:12]}..., new {digest[:12]}...); accepted results are "
                "never replaced. Use a new store (another model digest) to re-embed."
            )
            raise EmbeddingStoreError(msg)
        self.root.put(f"vectors/{digest}.f32", data)
        record = {
            "format": FORMAT,
            "unit_key": unit_key,
            "tile_ids": list(tile_ids),
            "volunteers": list(volunteers),
            "sha256": digest,
            "shape": list(vectors.shape),
            "dtype": "<f4",
            "vectors": f"vectors/{digest}.f32",
            "model_digest": self.model_digest,
        }
        if numerical_class:
            record["numerical_class"] = str(numerical_class)
        self.root.put(self._record_key(unit_key), _dumps(record))
        return digest

    def record(self, unit_key: str) -> UnitRecord:
        """The stored record of ``unit_key`` (without the vectors).

        Parameters
        ----------
        unit_key : str
            The work unit's key.

        Returns
        -------
        UnitRecord

        Raises
        ------
        EmbeddingStoreError
            If the unit is not stored, or its record is unreadable.
        """
        try:
            raw = json.loads(self.root.get(self._record_key(unit_key)))
            return UnitRecord(
                unit_key=raw["unit_key"],
                tile_ids=tuple(raw["tile_ids"]),
                volunteers=tuple(raw["volunteers"]),
                sha256=raw["sha256"],
                shape=(int(raw["shape"][0]), int(raw["shape"][1])),
                numerical_class=str(raw.get("numerical_class", "")),
            )
        except StoreNotFoundError:
            msg = f"unit {unit_key} is not in the embedding store {self.uri}"
            raise EmbeddingStoreError(msg) from None
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            msg = f"record of unit {unit_key} in {self.uri} is unreadable ({exc}); delete it and re-run"
            raise EmbeddingStoreError(msg) from exc

    def read(self, unit_key: str) -> tuple[UnitRecord, np.ndarray]:
        """Record and vectors (float32, shape (N, D)) of one unit, checked against its sha256.

        Parameters
        ----------
        unit_key : str
            The work unit's key.

        Returns
        -------
        record : UnitRecord
        vectors : numpy.ndarray of float32, shape (N, D)
            One vector per tile (finite; as written), in ``record.tile_ids`` order.

        Raises
        ------
        EmbeddingStoreError
            Missing unit or vectors, wrong size, or sha256 mismatch.
        """
        rec = self.record(unit_key)
        key = f"vectors/{rec.sha256}.f32"
        try:
            data = self.root.get(key)
        except StoreNotFoundError:
            msg = f"vectors of unit {unit_key} ({key}) are missing from {self.uri}; re-run the unit"
            raise EmbeddingStoreError(msg) from None
        n, d = rec.shape
        if len(data) != n * d * 4 or hashlib.sha256(data).hexdigest() != rec.sha256:
            msg = (
                f"vectors of unit {unit_key} in {self.uri} fail their sha256/size check; "
                "the store is corrupt, delete the unit's record and re-run it"
            )
            raise EmbeddingStoreError(msg)
        return rec, np.frombuffer(data, dtype="<f4").reshape(n, d).astype(np.float32)

    def records(self) -> list[UnitRecord]:
        """Records of every unit, sorted by unit key.

        Returns
        -------
        list of UnitRecord

        Raises
        ------
        EmbeddingStoreError
            If a record is unreadable.
        """
        return [self.record(k) for k in self.unit_keys()]

    def read_all(self) -> tuple[list[str], np.ndarray, list[tuple[str, ...]]]:
        """Every stored vector.

        Returns
        -------
        tile_ids : list of str, length N
        vectors : numpy.ndarray, shape (N, D), float32
            In unit-key order, then the unit's tile order; shape (0, 0) when empty.
        volunteers : list of tuple of str, length N
            For each tile, the volunteers whose results agreed for its unit.

        Raises
        ------
        EmbeddingStoreError
            A unit fails its checksum, or units disagree on the dimension.
        """
        ids: list[str] = []
        parts: list[np.ndarray] = []
        vols: list[tuple[str, ...]] = []
        for key in self.unit_keys():
            rec, vec = self.read(key)
            if parts and vec.shape[1] != parts[0].shape[1]:
                msg = f"unit {key} has {vec.shape[1]}-d vectors, others {parts[0].shape[1]}-d"
                raise EmbeddingStoreError(msg)
            ids.extend(rec.tile_ids)
            parts.append(vec)
            vols.extend([rec.volunteers] * len(rec.tile_ids))
        vectors = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
        return ids, vectors, vols

    def model_info(self) -> dict[str, Any] | None:
        """The ``model.json`` description written with the store, if any.

        Returns
        -------
        dict of str to Any or None
            The model's description (as :func:`describe` gives it), or None if absent.
        """
        try:
            return json.loads(self.root.get("model.json"))
        except StoreNotFoundError:
            return None

    def __repr__(self) -> str:
        return f"EmbeddingStore({self.uri!r})"


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True).encode()


def _object_store(tile_store: Any) -> ObjectStore:
    """The object store under a tile store given as a store, a TileStore or a URI."""
    if isinstance(tile_store, ObjectStore):
        return tile_store
    objects = getattr(tile_store, "objects", None)  # a TileStore keeps its S3 client and options
    if isinstance(objects, ObjectStore):
        return objects
    return open_object_store(os.fspath(getattr(tile_store, "uri", tile_store)))
