"""Weight deltas of training units: written as bytes to the result store, validated, compared.

A training replica writes ``<replica>.npz`` (an *uncompressed* ``numpy.savez`` archive, one
float32 array per trainable tensor) and ``<replica>.json`` (a receipt: sha256, size, format)
under its round's result folder, and returns only ``(sha256, nbytes, "npz")``. The operator
reads both with :func:`json.loads` and :func:`numpy.load` with ``allow_pickle=False`` -- nothing
a volunteer wrote is ever unpickled -- after checking the archive's size against the size of
the global weights, that every member is stored (no compression, so no member can expand past
what was read), and that its names are exactly the trainable tensors (:func:`check_delta_bytes`).
Two replicas of a unit agree when the relative norm of their difference is small and their
cosine close to 1 (:class:`DeltaTolerance`, calibrated on honest runs by
``python -m benchmarks training``).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import asdict, dataclass

import numpy as np

from grid._results import ResultStore
from grid.errors import GridConfigError, InvalidResultError

__all__ = [
    "DeltaStore",
    "DeltaTolerance",
    "check_delta_bytes",
    "compare_deltas",
    "delta_bytes",
    "flatten",
    "max_delta_bytes",
    "state_bytes",
]

FORMAT = "npz"
#: Bytes an archive may hold beyond its arrays' data (zip and ``.npy`` headers per member).
OVERHEAD_PER_MEMBER = 512


@dataclass(frozen=True)
class DeltaTolerance:
    """When two replicas' weight deltas agree.

    Parameters
    ----------
    max_rel_diff : float
        Largest ``||a - b|| / max(||a||, ||b||)`` over the flattened deltas.
    min_cosine : float
        Smallest cosine similarity of the flattened deltas.

    Both must hold. The relative norm catches a scaled delta (cosine 1), the cosine a delta
    turned away from the honest one; a zero delta (a free rider) fails both against an honest
    one. The defaults are ``benchmarks/training.py``'s honest ``rel diff`` and ``1 - cos`` between
    thread counts on one machine, with a margin (see ``docs/grid.md``).
    """

    max_rel_diff: float = 1e-3
    min_cosine: float = 0.99999

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_rel_diff < 1.0:
            msg = f"DeltaTolerance.max_rel_diff={self.max_rel_diff!r}: expected a value in [0, 1)"
            raise GridConfigError(msg)
        if not 0.0 < self.min_cosine <= 1.0:
            msg = f"DeltaTolerance.min_cosine={self.min_cosine!r}: expected a cosine in (0, 1]"
            raise GridConfigError(msg)

    def agree(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Whether flattened deltas ``a`` and ``b`` agree within this tolerance.

        Parameters
        ----------
        a, b : numpy.ndarray, 1-D float32
            Flattened deltas (:func:`flatten`).

        Returns
        -------
        bool
            False for different shapes.
        """
        if a.shape != b.shape:
            return False
        rel, cos = compare_deltas(a, b)
        return rel <= self.max_rel_diff and cos >= self.min_cosine

    def as_dict(self) -> dict:
        """The tolerance as a JSON-ready dict.

        Returns
        -------
        dict
        """
        return asdict(self)


def flatten(delta: dict[str, np.ndarray]) -> np.ndarray:
    """The tensors of ``delta`` in sorted-key order, as one float64 vector."""
    if not delta:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate([np.asarray(delta[k], dtype=np.float64).ravel() for k in sorted(delta)])


def compare_deltas(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``(relative norm of a - b, cosine of a and b)`` of two flattened deltas.

    Two zero deltas are equal (0, 1); a zero and a non-zero delta are as far apart as can be
    (1, 0).

    Parameters
    ----------
    a, b : numpy.ndarray
        Flattened deltas of one shape.

    Returns
    -------
    relative : float
        ``|a - b| / max(|a|, |b|)``.
    cosine : float
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 0.0, 1.0
    if na == 0.0 or nb == 0.0:
        return 1.0, 0.0
    rel = float(np.linalg.norm(a - b)) / max(na, nb)
    cos = float(np.dot(a, b)) / (na * nb)
    return rel, cos


def state_bytes(state: dict[str, np.ndarray]) -> bytes:
    """``state`` as an uncompressed npz archive of float32 little-endian arrays."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.ascontiguousarray(v, dtype="<f4") for k, v in sorted(state.items())})
    return buf.getvalue()


def delta_bytes(delta: dict[str, np.ndarray]) -> tuple[bytes, dict]:
    """The archive bytes and receipt of one replica's delta (worker side)."""
    data = state_bytes(delta)
    receipt = {"sha256": hashlib.sha256(data).hexdigest(), "nbytes": len(data), "format": FORMAT}
    return data, receipt


def max_delta_bytes(like: dict[str, np.ndarray]) -> int:
    """Largest archive a delta shaped like ``like`` may take (arrays plus headers)."""
    return sum(int(np.asarray(v).size) * 4 for v in like.values()) + OVERHEAD_PER_MEMBER * (
        len(like) + 2
    )


def read_state(data: bytes, like: dict[str, np.ndarray], label: str) -> dict[str, np.ndarray]:
    """Parse a weights archive, checked member by member against ``like`` (no pickles).

    Raises
    ------
    InvalidResultError
        ``"format"`` when it is not an archive of stored members with exactly the names of
        ``like``; ``"shape"`` / ``"dtype"`` when a member differs from ``like``'s.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile:
        msg = f"{label}: not an npz archive"
        raise InvalidResultError("format", msg) from None
    names = sorted(i.filename for i in infos)
    expected = sorted(f"{k}.npy" for k in like)
    if names != expected:
        extra = sorted(set(names) - set(expected))[:3]
        missing = sorted(set(expected) - set(names))[:3]
        msg = f"{label}: archive members differ from the weights (extra {extra}, missing {missing})"
        raise InvalidResultError("shape", msg)
    if any(i.compress_type != zipfile.ZIP_STORED for i in infos):
        msg = f"{label}: compressed members are refused (deltas are stored uncompressed)"
        raise InvalidResultError("format", msg)
    out = {}
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            for key, ref in like.items():
                arr = npz[key]
                if arr.dtype != np.dtype("<f4"):
                    msg = f"{label}: tensor {key} is {arr.dtype}, expected float32"
                    raise InvalidResultError("dtype", msg)
                if arr.shape != np.shape(ref):
                    msg = f"{label}: tensor {key} has shape {arr.shape}, expected {np.shape(ref)}"
                    raise InvalidResultError("shape", msg)
                out[key] = arr
    except InvalidResultError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        msg = f"{label}: unreadable archive ({exc})"
        raise InvalidResultError("format", msg) from None
    return out


def check_delta_bytes(
    receipt: dict, data: bytes, like: dict[str, np.ndarray], *, label: str = "delta"
) -> dict[str, np.ndarray]:
    """Validate one training replica's receipt and archive; return its delta.

    Parameters
    ----------
    receipt : dict
        ``{"sha256": hex, "nbytes": int, "format": "npz"}``.
    data : bytes
        The archive bytes.
    like : dict of str to numpy.ndarray
        The global weights of the round: the delta must have exactly these tensors, shapes
        and dtype (float32).
    label : str
        Names the replica (and its volunteer) in messages.

    Returns
    -------
    dict of str to numpy.ndarray (float32)

    Raises
    ------
    InvalidResultError
        ``reason`` one of ``"format"``, ``"shape"``, ``"dtype"``, ``"hash"``, ``"nan"``.
    """
    from embeddings import TuneError, check_delta

    if receipt.get("format") != FORMAT:
        msg = f"{label}: format {receipt.get('format')!r}, expected {FORMAT!r}"
        raise InvalidResultError("format", msg)
    if len(data) > max_delta_bytes(like):
        msg = f"{label}: {len(data)} bytes, at most {max_delta_bytes(like)} expected"
        raise InvalidResultError("shape", msg)
    sha = hashlib.sha256(data).hexdigest()
    if receipt.get("sha256") != sha:
        msg = f"{label}: bytes hash to {sha[:16]}..., receipt says {str(receipt.get('sha256'))[:16]}..."
        raise InvalidResultError("hash", msg)
    delta = read_state(data, like, label)
    bad = [k for k, v in delta.items() if not np.isfinite(v).all()]
    if bad:
        msg = f"{label}: tensor(s) {', '.join(sorted(bad)[:3])} hold NaN or infinite values"
        raise InvalidResultError("nan", msg)
    try:
        check_delta(delta, like)
    except TuneError as exc:
        msg = f"{label}: {exc}"
        raise InvalidResultError("shape", msg) from None
    return {k: np.array(v, dtype=np.float32) for k, v in delta.items()}


class DeltaStore(ResultStore):
    """Replica deltas of one training round (``<slug>/<replica>.npz`` and ``.json``)."""

    @staticmethod
    def keys(unit_slug: str, replica: str) -> tuple[str, str]:
        """Object keys ``(archive, receipt)`` of one replica."""
        return f"{unit_slug}/{replica}.npz", f"{unit_slug}/{replica}.json"

    @staticmethod
    def write_delta(store, unit_slug: str, replica: str, delta: dict[str, np.ndarray]) -> tuple:
        """Write a replica's delta and receipt (worker side); return ``(sha256, nbytes, "npz")``."""
        data, receipt = delta_bytes(delta)
        akey, rkey = DeltaStore.keys(unit_slug, replica)
        store.put(akey, data)
        store.put(rkey, json.dumps(receipt).encode())
        return receipt["sha256"], receipt["nbytes"], FORMAT
