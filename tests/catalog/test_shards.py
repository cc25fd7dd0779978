"""Metadata in HEALPix-sorted shards read by row group, and provenance leaves in shards.

2,000 synthetic tiles spread over the whole sky (and a dense field near the pole) with 8-d
vectors, metadata shards of 1,024 rows in row groups of 256, leaf shards of 300 leaves: every build
takes well under a second.
"""

from __future__ import annotations

import hashlib
import io
import json

import astropy.units as u
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord

from catalog import CatalogConfig, Catalogue, CorruptCatalogError, ShardReadError
from catalog import provenance as pv
from catalog._metashards import HEALPIX_COLUMN, cone_ranges, healpix_index
from hubcat.storage import LocalObjectStore, open_object_store
from tests._s3_support import record_gets

N, D = 2_000, 8
MODEL = {"name": "synthetic", "weights_sha256": "2" * 64, "digest": "3" * 64, "dim": D}
CONFIG = CatalogConfig(metadata_shard_rows=1024, row_group_rows=256, leaf_shard_rows=300)


def table(n: int, start: int = 0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    dense = slice(0, n // 4)  # a quarter of the tiles in a small field near the north pole
    ra[dense] = rng.uniform(0, 360, n // 4)
    dec[dense] = rng.uniform(88.5, 90, n // 4)
    return pd.DataFrame(
        {
            "tile_id": [f"t{i:06d}" for i in range(start, start + n)],
            "source": "synthetic",
            "source_sha256": "0" * 64,
            "hdu": 0,
            "zoom": 1 + np.arange(start, start + n) % 2,
            "x0": np.arange(n) * 224,
            "y0": 0,
            "ra": ra,
            "dec": dec,
            "tile_sha256": "1" * 64,
            "tiling_digest": "4" * 64,
        }
    )


def vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class CountingStore(LocalObjectStore):
    """A local store that records every read (key, bytes), as a client would see them."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.reads: list[tuple[str, int]] = []

    def get(self, key: str) -> bytes:
        data = super().get(key)
        self.reads.append((key, len(data)))
        return data

    def get_range(self, key: str, start: int, length: int) -> bytes:
        data = super().get_range(key, start, length)
        self.reads.append((key, len(data)))
        return data


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded") / "cat"
    Catalogue.from_vectors(root, table(N), vectors(N), MODEL, config=CONFIG)
    return root


def test_metadata_shards_are_bounded_and_sorted_by_healpix(built):
    cat = Catalogue.open(built)
    (seg,) = cat.manifest["segments"]
    assert "metadata_key" not in seg and seg["metadata_layout"]["scheme"] == "healpix-nested"
    shards = seg["metadata_shards"]
    assert [s["rows"] for s in shards] == [1024, 976]
    previous = -1
    for shard in shards:
        data = (built / shard["key"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"] and len(data) == shard["bytes"]
        pf = pq.ParquetFile(io.BytesIO(data))
        assert pf.metadata.num_row_groups == len(shard["row_groups"])
        hp = pf.read().column(HEALPIX_COLUMN).to_numpy()
        frame = pf.read().to_pandas()
        assert np.array_equal(hp, healpix_index(frame["ra"], frame["dec"]))
        assert hp[0] >= previous and np.all(np.diff(hp) >= 0)  # sorted across shards too
        previous = hp[-1]
        paths = [pf.metadata.schema.column(i).path for i in range(pf.metadata.num_columns)]
        for g, group in enumerate(shard["row_groups"]):
            stats = pf.metadata.row_group(g).column(paths.index(HEALPIX_COLUMN))
            assert group["rows"] <= 256
            assert (group["healpix_min"], group["healpix_max"]) == (
                stats.statistics.min,
                stats.statistics.max,
            )
    # metadata() is in leaf order, as before, and has no HEALPix column
    meta = cat.metadata()
    assert list(meta["tile_id"]) == list(table(N)["tile_id"])
    assert list(meta["leaf_index"]) == list(range(N)) and HEALPIX_COLUMN not in meta


@pytest.mark.parametrize(
    ("ra", "dec", "radius"),
    [
        (10.0, 5.0, 3 * u.deg),
        (359.5, -20.0, 4 * u.deg),  # across RA = 0
        (45.0, 89.9, 0.5 * u.deg),  # the dense field at the pole
        (200.0, -60.0, 30 * u.arcsec),
        (120.0, 30.0, 40 * u.deg),
    ],
)
def test_cone_reads_only_matching_row_groups_and_agrees_with_a_scan(built, ra, dec, radius):
    store = CountingStore(built)
    lazy = Catalogue.open(store)
    centre = SkyCoord(ra, dec, unit="deg")
    got = lazy.cone(centre, radius)
    assert lazy._meta is None  # the whole table was never read
    meta_bytes = sum(n for k, n in store.reads if "/metadata/" in k)
    full = Catalogue.open(built)
    full.metadata()
    want = full.cone(centre, radius)
    assert list(got["tile_id"]) == list(want["tile_id"])
    assert np.array_equal(got["row"], want["row"])
    assert np.allclose(got["separation"], want["separation"])
    got_z = lazy.cone(centre, radius, zoom=2, region=(centre, radius / 2))
    want_z = full.cone(centre, radius, zoom=2, region=(centre, radius / 2))
    assert list(got_z["tile_id"]) == list(want_z["tile_id"])
    total = sum(s["bytes"] for s in lazy.manifest["segments"][0]["metadata_shards"])
    if radius < 5 * u.deg:
        assert meta_bytes < 0.5 * total, (meta_bytes, total)


def test_a_cone_that_meets_no_row_group_is_empty(tmp_path):
    meta = table(50)
    meta["ra"], meta["dec"] = 150 + np.linspace(0, 0.01, 50), 2.0
    Catalogue.from_vectors(tmp_path / "c", meta, vectors(50), MODEL, config=CONFIG)
    cat = Catalogue.open(tmp_path / "c")
    res = cat.cone(SkyCoord(30, -40, unit="deg"), 1 * u.deg)
    assert len(res) == 0 and "no tile centre" in res.meta["message"]
    assert (
        res.colnames
        == Catalogue.open(tmp_path / "c").cone(SkyCoord(150, 2, unit="deg"), 1 * u.deg).colnames
    )
    assert cat._meta is None


def test_cone_ranges_cover_every_pixel_of_the_cone():
    """Points just inside the edge of cones of many sizes all fall in the cone's HEALPix ranges."""
    rng = np.random.default_rng(3)
    for radius in (1 * u.arcsec, 1 * u.arcmin, 0.7 * u.deg, 12 * u.deg):
        ra0, dec0 = rng.uniform(0, 360), rng.uniform(-89, 89)
        centre = SkyCoord(ra0, dec0, unit="deg")
        points = centre.directional_offset_by(
            rng.uniform(0, 360, 2000) * u.deg, radius * rng.uniform(0.98, 0.9999, 2000)
        )
        hp = healpix_index(points.ra.deg, points.dec.deg)
        ranges = cone_ranges(ra0, dec0, radius)
        inside = np.zeros(len(hp), bool)
        for lo, hi in ranges:
            inside |= (hp >= lo) & (hp < hi)
        assert inside.all(), radius


def test_old_single_file_metadata_still_opens(built, tmp_path):
    """A catalogue written before shards (one metadata.parquet per segment) reads as before."""
    import shutil

    root = tmp_path / "old"
    shutil.copytree(built, root)
    m = json.loads((root / "manifest.json").read_text())
    seg = m["segments"][0]
    meta = Catalogue.open(built).metadata()
    buf = io.BytesIO()
    meta.to_parquet(buf, index=False)
    (root / "segments/000001/metadata.parquet").write_bytes(buf.getvalue())
    seg["metadata_key"] = "segments/000001/metadata.parquet"
    seg["metadata_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    for key in ("metadata_shards", "metadata_layout", "superseding"):
        del seg[key]
    shutil.rmtree(root / "segments/000001/metadata")
    (root / "manifest.json").write_text(json.dumps(m))
    old = Catalogue.open(root)
    centre = SkyCoord(10, 5, unit="deg")
    assert list(old.cone(centre, 3 * u.deg)["tile_id"]) == list(
        Catalogue.open(built).cone(centre, 3 * u.deg)["tile_id"]
    )
    assert old.metadata().equals(meta)
    # a new version on top: its segment is sharded, the old one is read as before
    v2 = Catalogue.from_vectors(root, table(10, start=N, seed=1), vectors(10, 1), MODEL)
    assert "metadata_shards" in v2.manifest["segments"][1]
    fresh = Catalogue.open(root)
    assert list(fresh.metadata()["leaf_index"]) == list(range(N + 10))
    assert list(Catalogue.open(root).cone(centre, 3 * u.deg)["tile_id"]) == list(
        fresh.cone(centre, 3 * u.deg)["tile_id"]
    )


# --------------------------------------------------------------------------- bad input


def _copy(built, tmp_path):
    import shutil

    root = tmp_path / "cat"
    shutil.copytree(built, root)
    return root, json.loads((root / "manifest.json").read_text())


def test_missing_or_truncated_metadata_shard_is_named(built, tmp_path):
    root, m = _copy(built, tmp_path)
    shard = m["segments"][0]["metadata_shards"][1]["key"]
    path = root / shard
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    centre = SkyCoord(0, 0, unit="deg")
    with pytest.raises(
        CorruptCatalogError, match=f"{shard} .* is {len(data) // 2} bytes.*truncated"
    ):
        Catalogue.open(root).cone(centre, 180 * u.deg)
    with pytest.raises(
        CorruptCatalogError, match=f"metadata of catalogue .*\\({shard}\\) does not match"
    ):
        Catalogue.open(root).metadata()
    report = pv.verify_catalogue(Catalogue.open(root))  # hubcat verify names it
    assert shard in [f.subject for f in report.failures if f.kind == "file"]
    path.unlink()  # missing
    with pytest.raises(CorruptCatalogError, match=f"metadata shard {shard} .* is missing"):
        Catalogue.open(root).cone(centre, 180 * u.deg)
    with pytest.raises(
        CorruptCatalogError, match=f"metadata \\({shard}\\) of catalogue .* is missing"
    ):
        Catalogue.open(root).metadata()
    report = pv.verify_catalogue(Catalogue.open(root))
    assert f"metadata shard {shard} named by manifest.json is missing" in [
        f.message for f in report.failures
    ]
    # nothing else was touched: the other shards are intact
    for other in m["segments"][0]["metadata_shards"]:
        if other["key"] != shard:
            assert hashlib.sha256((root / other["key"]).read_bytes()).hexdigest() == other["sha256"]


def test_a_manifest_naming_shards_that_are_not_there(built, tmp_path):
    root, m = _copy(built, tmp_path)
    seg = m["segments"][0]
    ghost = dict(seg["metadata_shards"][0], key="segments/000001/metadata/00009.parquet")
    seg["metadata_shards"].append(ghost)
    leaf_ghost = "provenance/leaves/ghost.jsonl"
    m["provenance"]["files"]["leaf_shards"][1]["key"] = leaf_ghost
    (root / "manifest.json").write_text(json.dumps(m))
    cat = Catalogue.open(root)
    with pytest.raises(CorruptCatalogError, match=r"metadata/00009\.parquet"):
        cat.metadata()
    with pytest.raises(CorruptCatalogError, match=r"metadata/00009\.parquet"):
        cat.cone(SkyCoord(0, 0, unit="deg"), 180 * u.deg)
    with pytest.raises(pv.ProvenanceNotFoundError, match=f"provenance shard {leaf_ghost}"):
        pv.verify_catalogue(cat)


def test_leaf_shards_missing_truncated_or_altered_are_named(built, tmp_path, capsys):
    from pipeline.cli import main as hubcat

    root, m = _copy(built, tmp_path)
    shards = m["provenance"]["files"]["leaf_shards"]
    assert [s["leaves"] for s in shards] == [300] * 6 + [200]
    files = lambda report: [f.subject for f in report.failures if f.kind == "file"]  # noqa: E731
    assert files(pv.verify_catalogue(Catalogue.open(root))) == []  # (no tile store: no pixels)
    key, hkey = shards[2]["key"], shards[3]["hashes_key"]
    path = root / key
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # truncated
    with pytest.raises(pv.ProvenanceError, match=f"leaf shard {key} does not end with a newline"):
        pv.verify_catalogue(Catalogue.open(root))
    assert hubcat(["verify", str(root)]) == 1
    err = capsys.readouterr().err
    assert f"leaf shard {key} does not end with a newline" in err and "Traceback" not in err
    path.write_bytes(data.replace(b'"zoom":1', b'"zoom":3', 1))  # altered
    report = pv.verify_catalogue(Catalogue.open(root))
    assert key in files(report)
    path.write_bytes(data)
    (root / hkey).unlink()  # a leaf-hash shard missing
    report = pv.verify_catalogue(Catalogue.open(root))
    assert files(report) == [hkey]
    tile = Catalogue.open(root).metadata()["tile_id"].iloc[5]
    with pytest.raises(pv.ProvenanceNotFoundError, match=f"provenance shard {hkey}"):
        pv.verify_tile(Catalogue.open(root), tile)


# --------------------------------------------------------------------------- provenance shards


def test_streaming_tree_matches_rfc6962_vectors_and_the_in_memory_tree(rfc6962_dir, tmp_path):
    t = json.loads((rfc6962_dir / "tree8.json").read_text())
    ref = json.loads((rfc6962_dir / "reference_proofs.json").read_text())
    leaves = [bytes.fromhex(x) for x in t["leaves_hex"]]
    for n, root in t["roots_by_size"].items():
        stream = pv.MerkleStream()
        stream.add_hashes(b"".join(pv.hash_leaf(x) for x in leaves[: int(n)]))
        assert stream.root.hex() == root
    store = LocalObjectStore(tmp_path / "log")
    for shard_leaves in (1, 3, 8):
        for size in range(1, 9):
            shards, tree = _write(store, leaves[:size], shard_leaves)
            hs = pv.HashShards(store, shards, size)
            for case in ref["inclusion"]:
                if case["tree_size"] == size:
                    assert [p.hex() for p in hs.inclusion_proof(case["leaf_index"])] == case["path"]
            for case in ref["consistency"]:
                if case["size2"] == size:
                    assert [p.hex() for p in hs.consistency_proof(case["size1"])] == case["path"]
    rng = np.random.default_rng(0)
    for size in (63, 64, 65, 300, 1025):
        raw = [rng.bytes(int(rng.integers(0, 40))) for _ in range(size)]
        whole = pv.MerkleTree.from_leaves(raw)
        shards, tree = _write(LocalObjectStore(tmp_path / f"r{size}"), raw, 100)
        assert tree.root == whole.root
        hs = pv.HashShards(LocalObjectStore(tmp_path / f"r{size}"), shards, size)
        for i in rng.integers(0, size, 4):
            assert hs.inclusion_proof(int(i)) == whole.inclusion_proof(int(i))
        for old in rng.integers(1, size + 1, 4):
            assert hs.consistency_proof(int(old)) == whole.consistency_proof(int(old))


def _write(store, leaves, shard_leaves):
    from catalog.provenance._leafshards import write_leaf_shards

    return write_leaf_shards(store, iter(leaves), shard_leaves)


def test_a_refused_version_loses_no_earlier_shard(tmp_path):
    """Old rows changed in a new version: refused, and the previous version's shards stay."""
    store = LocalObjectStore(tmp_path / "log")
    records = [_record(i) for i in range(10)]
    v1 = pv.build_provenance(records, store, shard_leaves=4)
    before = {
        s["key"]: (tmp_path / "log" / s["key"]).read_bytes() for s in v1["files"]["leaf_shards"]
    }
    changed = [*records, _record(10)]
    changed[1] = {**changed[1], "zoom": 4}
    with pytest.raises(pv.ProvenanceError, match="old rows were changed"):
        pv.build_provenance(changed, store, previous=v1, shard_leaves=4)
    for key, data in before.items():
        assert (tmp_path / "log" / key).read_bytes() == data
    v2 = pv.build_provenance([*records, _record(10)], store, previous=v1, shard_leaves=4)
    assert pv.verify_consistency(10, 11, v1["root"], v2["root"], v2["consistency_proof"])
    assert [s["key"] for s in v2["files"]["leaf_shards"][:2]] == list(before)[:2]  # reused


def _record(i: int) -> dict:
    return {
        "tile_id": f"t{i}",
        "source": "s.fits",
        "source_sha256": "a" * 64,
        "hdu": 0,
        "zoom": 1,
        "box": [i, 0, 224, 224],
        "tiling_digest": "b" * 64,
        "tile_sha256": "c" * 64,
        "model": "m",
        "weights_sha256": "d" * 64,
        "preprocessing_digest": "e" * 64,
        "embedding_sha256": "f" * 64,
        "embedding_dtype": "<f4",
        "embedding_shape": [D],
        "volunteers": [],
        "software_version": "1",
    }


@pytest.mark.s3
def test_cone_on_s3_reads_only_the_row_groups_it_needs(s3_server):
    """On the loopback S3 server, a small cone fetches a few ranges of the metadata, not all."""
    bucket = s3_server.create_bucket("hubcat-metashards")
    uri = f"{bucket}/cat"
    Catalogue.from_vectors(uri, table(N), vectors(N), MODEL, config=CONFIG)
    store = open_object_store(uri)
    got = record_gets(store)
    cat = Catalogue.open(store)
    got.clear()
    centre = SkyCoord(10.0, 5.0, unit="deg")
    res = cat.cone(centre, 2 * u.deg)
    want = table(N)
    sep = SkyCoord(want["ra"], want["dec"], unit="deg").separation(centre)
    assert sorted(res["tile_id"]) == sorted(want["tile_id"][sep <= 2 * u.deg])
    meta = [(k, n, r) for k, n, r in got if "/metadata/" in k]
    total = sum(s["bytes"] for s in cat.manifest["segments"][0]["metadata_shards"])
    assert meta and all(r is not None for _, _, r in meta)  # ranges, never a whole shard
    assert sum(n for _, n, _ in meta) < 0.25 * total, (meta, total)
    assert not any("/vectors" in k or "provenance/" in k for k, _, _ in got)
    # an S3 failure mid-query: the error names the shard, and the next query works again
    from tests._s3_support import FaultProxy

    proxy = FaultProxy(s3_server.host, s3_server.port)
    try:
        flaky = open_object_store(uri, endpoint_url=proxy.endpoint_url, max_attempts=2)
        cat = Catalogue.open(flaky)
        shard = meta[0][0].split("/", 1)[1]
        proxy.add("error500", shard, times=50)
        with pytest.raises(ShardReadError, match=f"metadata shard {shard}"):
            cat.cone(centre, 2 * u.deg)
        proxy.clear()
        assert sorted(cat.cone(centre, 2 * u.deg)["tile_id"]) == sorted(res["tile_id"])
    finally:
        proxy.stop()


def test_a_log_written_before_shards_verifies_and_grows(built, tmp_path):
    """An older single-file log (leaves.jsonl, leaf_hashes.bin) verifies, and a new version on
    top of it writes shards whose tree extends it (its consistency proof verifies)."""
    root, m = _copy(built, tmp_path)
    files = m["provenance"]["files"]
    leaves = b"".join((root / s["key"]).read_bytes() for s in files["leaf_shards"])
    hashes = b"".join((root / s["hashes_key"]).read_bytes() for s in files["leaf_shards"])
    for s in files.pop("leaf_shards"):
        (root / s["key"]).unlink()
        (root / s["hashes_key"]).unlink()
    (root / "provenance/leaves.jsonl").write_bytes(leaves)
    (root / "provenance/leaf_hashes.bin").write_bytes(hashes)
    files.update(leaves="provenance/leaves.jsonl", leaf_hashes="provenance/leaf_hashes.bin")
    for key in ("manifest.json", "versions/000001/manifest.json"):
        (root / key).write_text(json.dumps(m))
    report = pv.verify_catalogue(Catalogue.open(root))
    assert [f for f in report.failures if f.kind == "file"] == []
    assert any("hash to the checkpoint's root" in c for c in report.checks)
    v2 = Catalogue.from_vectors(root, table(10, start=N, seed=1), vectors(10, 1), MODEL)
    prov = v2.manifest["provenance"]
    assert prov["tree_size"] == N + 10 and prov["files"]["leaf_shards"]
    assert pv.verify_consistency(
        N, N + 10, m["provenance"]["root"], prov["root"], prov["consistency_proof"]
    )
    assert [f for f in pv.verify_catalogue(v2).failures if f.kind == "file"] == []
