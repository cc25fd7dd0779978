"""Optional leaf keys: superseded rows, and the numerical class of each row.

A unit recomputed after its volunteer was caught replaces its old rows.

The provenance log is append-only, so a row is never changed or removed. When a unit that was
accepted on the word of a volunteer later caught is reopened and recomputed (see
``docs/grid.md``), the next catalogue version appends one new row per tile whose metadata column
``supersedes``, and whose Merkle leaf key ``supersedes``, hold the leaf index of the row it
replaces. :meth:`catalog.Catalogue.superseded` marks the replaced rows; no query returns them,
and ``hubcat verify`` checks that each heir names an earlier leaf of the same tile.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

__all__ = ["class_of", "recomputed_rows", "supersedes_of"]


def class_of(row) -> dict:
    """``{"numerical_class": cls}`` for a row whose unit records the runtime and precision
    that computed it (replicas are compared within one class), else ``{}``."""
    cls = getattr(row, "numerical_class", None)
    if not isinstance(cls, str) or not cls:
        return {}
    return {"numerical_class": cls}


def supersedes_of(row) -> dict:
    """``{"supersedes": leaf}`` for a metadata row that replaces an earlier one, else ``{}``."""
    old = getattr(row, "supersedes", None)
    if old is None or pd.isna(old) or int(old) < 0:
        return {}
    return {"supersedes": int(old)}


def recomputed_rows(previous, meta: pd.DataFrame, vectors: np.ndarray) -> np.ndarray:
    """For each input row, the live catalogue row of the same tile whose embedding or
    volunteers changed since (it was reopened and recomputed), else -1."""
    meta_prev = previous._metadata()
    live = ~previous.superseded()
    rows = pd.Series(np.flatnonzero(live), index=meta_prev["tile_id"].to_numpy()[live])
    rows = rows[~rows.index.duplicated(keep="last")]
    out = np.full(len(meta), -1, dtype=np.int64)
    tids = meta["tile_id"].to_numpy()
    known = pd.Index(rows.index).get_indexer(tids)
    for i in np.flatnonzero(known >= 0):
        old = int(rows.iloc[known[i]])
        sha = hashlib.sha256(np.ascontiguousarray(vectors[i], dtype="<f4").tobytes())
        vols = sorted(str(v) for v in meta["volunteers"].iloc[i])
        prev_vols = sorted(str(v) for v in meta_prev["volunteers"].iloc[old])
        if sha.hexdigest() != str(meta_prev["embedding_sha256"].iloc[old]) or vols != prev_vols:
            out[i] = old
    return out
