"""Result store and validator: vectors travel as bytes in a store, never through Dask.

A task writes ``<replica>.f32`` (float32 little-endian C-order bytes) and ``<replica>.json`` (a
receipt: sha256, shape, dtype) under the run's result folder and returns only
``(sha256, shape, dtype)``. The operator's process reads both with :func:`json.loads` and
:func:`numpy.frombuffer` -- nothing a volunteer wrote is ever unpickled -- and checks them with
:func:`check_replica`; :func:`agree` compares two replicas tile by tile.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from embeddings import NORM_TOLERANCE, norm_error
from grid.errors import InvalidResultError
from hubcat.errors import StoreNotFoundError
from hubcat.storage import ObjectStore

__all__ = ["ResultStore", "agree", "check_replica", "cosines"]

DTYPE = "float32"
MAX_RECEIPT = 4096


class ResultStore:
    """Replica results of one run, in an :class:`~hubcat.storage.ObjectStore` folder.

    Parameters
    ----------
    store : ObjectStore
        Folder of this run's results (``grid/<model digest>/results`` of the tile store).
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @property
    def uri(self) -> str:
        return self.store.uri

    @staticmethod
    def keys(unit_slug: str, replica: str) -> tuple[str, str]:
        """Object keys ``(vectors, receipt)`` of one replica.

        Parameters
        ----------
        unit_slug : str
            File-name-safe form of the unit key.
        replica : str
            The replica's id.

        Returns
        -------
        tuple of (str, str)
            ``<unit_slug>/<replica>.f32`` and ``<unit_slug>/<replica>.json``.
        """
        return f"{unit_slug}/{replica}.f32", f"{unit_slug}/{replica}.json"

    @staticmethod
    def write(store: ObjectStore, unit_slug: str, replica: str, vectors: np.ndarray) -> tuple:
        """Write a replica's vectors and receipt (worker side); return ``(sha256, shape, dtype)``.

        Parameters
        ----------
        store : ObjectStore
            The store the replica's result is written to.
        unit_slug : str
            File-name-safe form of the unit key.
        replica : str
            The replica's id.
        vectors : numpy.ndarray, shape (N, D)
            The replica's vectors; written as float32 little-endian C-order bytes.

        Returns
        -------
        tuple
            ``(sha256, shape, dtype)``: hex digest of the written bytes, ``vectors.shape`` as
            a tuple of int, and ``"<f4"``.
        """
        data = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
        sha = hashlib.sha256(data).hexdigest()
        shape = tuple(int(s) for s in vectors.shape)
        vkey, rkey = ResultStore.keys(unit_slug, replica)
        store.put(vkey, data)
        store.put(rkey, json.dumps({"sha256": sha, "shape": list(shape), "dtype": DTYPE}).encode())
        return sha, shape, DTYPE

    def read(
        self, unit_slug: str, replica: str, *, max_bytes: int | None = None
    ) -> tuple[dict, bytes]:
        """The receipt (parsed JSON) and raw bytes of one replica.

        Parameters
        ----------
        unit_slug, replica : str
        max_bytes : int or None
            Largest vector object accepted: its size is checked before it is read, so an
            oversized result costs the operator no memory.

        Returns
        -------
        receipt : dict
            The receipt's JSON object (not yet checked against the bytes).
        data : bytes
            The vector bytes.

        Raises
        ------
        InvalidResultError
            ``"missing"`` when either object is absent, ``"receipt"`` when the receipt is not
            a small JSON object, ``"shape"`` when the vectors are larger than ``max_bytes``.
        """
        vkey, rkey = self.keys(unit_slug, replica)
        try:
            rsize = self.store.size(rkey)
            if rsize > MAX_RECEIPT:
                msg = f"replica {replica} of {unit_slug}: receipt of {rsize} bytes is too large"
                raise InvalidResultError("receipt", msg)
            vsize = self.store.size(vkey)
            if max_bytes is not None and vsize > max_bytes:
                msg = (
                    f"replica {replica} of {unit_slug}: {vsize} bytes of vectors, at most "
                    f"{max_bytes} expected (not read)"
                )
                raise InvalidResultError("shape", msg)
            raw = self.store.get(rkey)
            data = self.store.get(vkey)
        except StoreNotFoundError as exc:
            msg = f"replica {replica} of {unit_slug}: result missing from {self.uri} ({exc})"
            raise InvalidResultError("missing", msg) from None
        return self.parse(raw, data, f"replica {replica} of {unit_slug}")

    @staticmethod
    def parse(raw: bytes, data: bytes, label: str) -> tuple[dict, bytes]:
        """A receipt's JSON object and the vector bytes, as :meth:`read` returns them.

        Parameters
        ----------
        raw : bytes
            The receipt's bytes.
        data : bytes
            The vector bytes (passed through).
        label : str
            What the error messages call the result (``"replica r1 of unit ..."``).

        Returns
        -------
        receipt : dict
        data : bytes

        Raises
        ------
        InvalidResultError
            ``"receipt"`` when the receipt is not a small JSON object.
        """
        if len(raw) > MAX_RECEIPT:
            msg = f"{label}: receipt of {len(raw)} bytes is too large"
            raise InvalidResultError("receipt", msg)
        try:
            receipt = json.loads(raw)
        except ValueError:
            receipt = None
        if not isinstance(receipt, dict):
            msg = f"{label}: receipt is not a JSON object"
            raise InvalidResultError("receipt", msg)
        return receipt, data

    def delete(self, unit_slug: str, replica: str) -> None:
        """Delete one replica's vectors and receipt (missing objects are not an error).

        Parameters
        ----------
        unit_slug : str
            File-name-safe form of the unit key.
        replica : str
            The replica's id.
        """
        for key in self.keys(unit_slug, replica):
            self.store.delete(key)


def check_replica(
    receipt: dict,
    data: bytes,
    *,
    n_tiles: int,
    dim: int,
    norm_tolerance: float = NORM_TOLERANCE,
    label: str = "replica",
) -> np.ndarray:
    """Validate one replica's receipt and bytes; return its vectors.

    Parameters
    ----------
    receipt : dict
        ``{"sha256": hex, "shape": [N, D], "dtype": "float32"}``.
    data : bytes
        The replica's vector bytes.
    n_tiles, dim : int
        Expected shape ``(n_tiles, dim)``.
    norm_tolerance : float
        Largest allowed ``|norm - 1|`` of a vector (default :data:`embeddings.NORM_TOLERANCE`,
        the tolerance the catalogue build applies too).
    label : str
        Names the replica in messages.

    Returns
    -------
    numpy.ndarray, shape (n_tiles, dim), float32

    Raises
    ------
    InvalidResultError
        With ``reason`` one of ``"dtype"``, ``"shape"``, ``"hash"``, ``"nan"``, ``"norm"``.
    """
    dtype = receipt.get("dtype")
    if dtype != DTYPE:
        msg = f"{label}: dtype {dtype!r}, expected {DTYPE!r}"
        raise InvalidResultError("dtype", msg)
    shape = receipt.get("shape")
    if not (isinstance(shape, list) and [type(s) for s in shape] == [int, int]) or tuple(shape) != (
        n_tiles,
        dim,
    ):
        msg = f"{label}: shape {shape!r}, expected [{n_tiles}, {dim}]"
        raise InvalidResultError("shape", msg)
    if len(data) != n_tiles * dim * 4:
        msg = f"{label}: {len(data)} bytes, expected {n_tiles * dim * 4} for float32 [{n_tiles}, {dim}]"
        raise InvalidResultError("shape", msg)
    sha = hashlib.sha256(data).hexdigest()
    if receipt.get("sha256") != sha:
        msg = f"{label}: bytes hash to {sha[:16]}..., receipt says {str(receipt.get('sha256'))[:16]}..."
        raise InvalidResultError("hash", msg)
    vectors = np.frombuffer(data, dtype="<f4").reshape(n_tiles, dim)
    if not np.isfinite(vectors).all():
        bad = int((~np.isfinite(vectors)).any(axis=1).sum())
        msg = f"{label}: {bad} vector(s) contain NaN or infinite values"
        raise InvalidResultError("nan", msg)
    worst = float(np.max(norm_error(vectors))) if n_tiles else 0.0
    if worst > norm_tolerance:
        msg = f"{label}: a vector has norm off by {worst:.3g}, more than {norm_tolerance:g}"
        raise InvalidResultError("norm", msg)
    return vectors.astype(np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b`` (float64, shape (N,)).

    Parameters
    ----------
    a, b : numpy.ndarray, shape (N, D)
        Vectors, computed in float64.

    Returns
    -------
    numpy.ndarray of float64, shape (N,)
        0 for a row where either vector is zero.
    """
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    num = np.einsum("ij,ij->i", a, b)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.where(den == 0, 1.0, den)


def agree(a: np.ndarray, b: np.ndarray, min_cosine: float) -> bool:
    """Whether every tile's vectors in ``a`` and ``b`` have cosine >= ``min_cosine``.

    Parameters
    ----------
    a, b : numpy.ndarray, shape (N, D)
        Two replicas' vectors of the same tiles, in the same order.
    min_cosine : float
        Smallest cosine accepted for each tile.

    Returns
    -------
    bool
        False when the shapes differ; True for two empty arrays.
    """
    if a.shape != b.shape:
        return False
    return bool(a.shape[0] == 0 or cosines(a, b).min() >= min_cosine)
