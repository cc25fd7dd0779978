"""A unit recomputed after its volunteer was caught supersedes its rows in the next version."""

from __future__ import annotations

import shutil

import numpy as np
import pytest


@pytest.fixture
def recomputed(tmp_path, stores, model):
    """A catalogue of ``main``, then one unit's vectors recomputed by other volunteers."""
    from catalog import Catalogue
    from embeddings import EmbeddingStore

    ts, es = stores["main"]
    work = tmp_path / "tiles"
    shutil.copytree(ts.uri, work)
    from tiling import TileStore

    ts = TileStore.open(str(work))
    es = EmbeddingStore(ts, model)
    cat1 = Catalogue.build(tmp_path / "cat", ts, es)
    unit = ts.units()[0]
    rec, vectors = es.read(unit.unit_key)
    es.revoke(unit.unit_key)  # accepted on a caught liar's word: withdrawn ...
    rng = np.random.default_rng(0)
    redone = vectors + rng.normal(0, 1e-3, vectors.shape).astype(np.float32)
    redone /= np.linalg.norm(redone, axis=1, keepdims=True)
    es.write(  # ... and redone, by two volunteers of one numerical class
        unit.unit_key,
        rec.tile_ids,
        redone,
        volunteers=["vol-a", "vol-b"],
        numerical_class="openvino-fp32",
    )
    cat2 = Catalogue.build(tmp_path / "cat", ts, es)
    return cat1, cat2, list(rec.tile_ids)


def test_recomputed_rows_supersede_the_old_ones(recomputed):
    cat1, cat2, tiles = recomputed
    assert cat2.version == cat1.version + 1
    assert len(cat2) == len(cat1) + len(tiles)  # append-only: old rows stay in the log
    gone = cat2.superseded()
    meta = cat2.metadata()
    assert gone.sum() == len(tiles)
    assert set(meta["tile_id"][gone]) == set(tiles)
    for tid in tiles:
        row = cat2.row_of(tid)
        assert not gone[row] and row >= len(cat1)
        assert int(meta["supersedes"].iloc[row]) == cat1.row_of(tid)
        assert list(meta["volunteers"].iloc[row]) == ["vol-a", "vol-b"]
    # no query returns a superseded row
    res = cat2.similar(tiles[0], k=len(cat2) - len(tiles))
    rows = [cat2.row_of(t) for t in res["tile_id"]]
    assert not gone[rows].any() and len(set(res["tile_id"])) == len(res)
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    ra, dec = float(meta["ra"].iloc[0]), float(meta["dec"].iloc[0])
    cone = cat2.cone(SkyCoord(ra, dec, unit="deg"), 1 * u.deg)
    assert len(cone) == int((~gone).sum()) or not set(cone["tile_id"]) - set(meta["tile_id"])
    assert len(set(cone["tile_id"])) == len(cone)
    from catalog import Catalogue

    lazy = Catalogue.open(cat2.store)  # the cone read by row group: superseded rows left out too
    assert list(lazy.cone(SkyCoord(ra, dec, unit="deg"), 1 * u.deg)["tile_id"]) == list(
        cone["tile_id"]
    )
    assert lazy._meta is None
    assert len(cat2.anomalies(len(cat2))) == int((~gone).sum())


def test_the_log_stays_verifiable_and_names_what_was_replaced(recomputed):
    from catalog.provenance import parse_leaf, verify_catalogue

    cat1, cat2, tiles = recomputed
    assert cat2.verify(tiles[0]) is not None
    full = verify_catalogue(cat2)
    assert full.ok, full.summary()
    leaves = cat2.records()
    heir = leaves[cat2.row_of(tiles[0])]
    assert heir["supersedes"] == cat1.row_of(tiles[0])
    assert heir["numerical_class"] == "openvino-fp32"  # the class is part of the leaf
    old = leaves[cat1.row_of(tiles[0])]
    assert "supersedes" not in old and "numerical_class" not in old
    from catalog.provenance import leaf_bytes

    assert parse_leaf(leaf_bytes(heir, cat2.row_of(tiles[0])))["supersedes"] == heir["supersedes"]


def test_a_leaf_may_only_supersede_an_earlier_one(recomputed):
    from catalog.provenance import ProvenanceError, leaf_bytes

    _, cat2, tiles = recomputed
    row = cat2.row_of(tiles[0])
    rec = dict(cat2.records()[row], supersedes=row)
    with pytest.raises(ProvenanceError, match="must be the index of an earlier leaf"):
        leaf_bytes(rec, row)
