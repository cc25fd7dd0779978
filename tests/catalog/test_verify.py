"""Verifying a real catalogue: tamper tests, bad input, versions, `hubcat verify` and `keygen`.

A small signed catalogue is built once per module from a copy of the shared ``main`` tile store
(real HST tiles, embedded by the real default model); every tamper test changes one thing in a
fresh copy of it and checks that verification fails and names exactly what changed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from catalog import provenance as pv
from pipeline.cli import main as hubcat
from tests._notebooks import assert_outputs_stored, run_notebook


@pytest.fixture(scope="module")
def signed(tmp_path_factory, stores, model):
    """``(catalogue dir, tile store dir, SigningKey, key dir)`` of a signed catalogue."""
    from catalog import Catalogue
    from embeddings import EmbeddingStore
    from tiling import TileStore

    base = tmp_path_factory.mktemp("signed")
    tiles = base / "tiles"
    shutil.copytree(stores["main"][0].uri, tiles)
    ts = TileStore.open(tiles)
    key = pv.load_or_create_signing_key(base / "keys" / "hubcat.key")
    Catalogue.build(base / "cat", ts, EmbeddingStore(ts, model), signing_key=key)
    return base / "cat", tiles, key, base / "keys"


@pytest.fixture
def copy(signed, tmp_path):
    """A fresh copy of the signed catalogue and of its tile store, free to tamper with."""
    cat_dir, tiles_dir, key, _keys = signed
    shutil.copytree(cat_dir, tmp_path / "cat")
    shutil.copytree(tiles_dir, tmp_path / "tiles")
    return tmp_path / "cat", tmp_path / "tiles", key


def open_copy(cat_dir: Path, tiles_dir: Path):
    from catalog import Catalogue
    from tiling import TileStore

    return Catalogue.open(cat_dir, tile_store=TileStore.open(tiles_dir))


def manifest(cat_dir: Path) -> dict:
    return json.loads((cat_dir / "manifest.json").read_text())


def write_manifest(cat_dir: Path, data: dict) -> None:
    (cat_dir / "manifest.json").write_text(json.dumps(data, indent=1))


def first_leaf_shard(cat_dir: Path) -> str:
    """Key of the first provenance leaf shard the manifest lists."""
    return manifest(cat_dir)["provenance"]["files"]["leaf_shards"][0]["key"]


def fail_messages(report) -> str:
    return "\n".join(str(f) for f in report.failures)


# --------------------------------------------------------------------------- the honest catalogue


def test_signed_catalogue_verifies(signed):
    from catalog import Catalogue

    cat_dir, _tiles, key, keys = signed
    cat = Catalogue.open(cat_dir)
    tile = cat.metadata()["tile_id"].iloc[2]
    report = pv.verify_catalogue(cat, tile_id=tile, public_key=keys / "hubcat.key.pub")
    assert report.ok, report.summary()
    assert report.key == key.verifier.label and not report.warnings
    assert report.tree_size == len(cat) >= 4
    assert report.proof.leaf_index == 2 and report.proof.verify()
    leaf = json.loads(report.proof.leaf)
    assert leaf["tile_id"] == tile and leaf["schema"] == pv.LEAF_SCHEMA
    # the proof checks with the bare RFC 9162 verifier and the manifest's root
    root = cat.manifest["provenance"]["root"]
    assert pv.verify_inclusion(report.proof.leaf_hash, 2, len(cat), report.proof.path, root)
    # Catalogue.verify gives the same proof
    proof = cat.verify(tile)
    assert isinstance(proof, pv.InclusionProof) and proof.path == report.proof.path


def test_hubcat_verify_cli_prints_the_proof(signed, capsys):
    cat_dir, _tiles, _key, keys = signed
    from catalog import Catalogue

    tile = Catalogue.open(cat_dir).metadata()["tile_id"].iloc[1]
    rc = hubcat(
        ["verify", str(cat_dir), "--tile", tile, "--public-key", str(keys / "hubcat.key.pub")]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"inclusion proof of tile {tile}: leaf 1" in out
    assert "path[ 0]" in out and "every check holds" in out


# --------------------------------------------------------------------------- tamper tests


def test_one_byte_of_one_embedding(copy, capsys):
    cat_dir, tiles_dir, _key = copy
    cat = open_copy(cat_dir, tiles_dir)
    row, dim = 3, cat.vectors().shape[1]
    tile = cat.metadata()["tile_id"].iloc[row]
    seg = cat.manifest["segments"][0]
    path = cat_dir / seg["vectors_key"]
    data = bytearray(path.read_bytes())
    data[row * dim * 4 + 7] ^= 0x01
    path.write_bytes(bytes(data))
    report = pv.verify_catalogue(open_copy(cat_dir, tiles_dir))
    assert not report.ok
    assert report.failed_tiles == [tile]
    assert f"tile {tile} (leaf {row}): its embedding" in fail_messages(report)
    assert seg["vectors_key"] in fail_messages(report)  # the file is named too
    with pytest.raises(pv.VerificationError, match=tile):
        open_copy(cat_dir, tiles_dir).verify(tile)
    # a careful forger also fixes the manifest's file hash: the signed leaf still catches it
    m = manifest(cat_dir)
    m["segments"][0]["vectors_sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    write_manifest(cat_dir, m)
    report = pv.verify_catalogue(open_copy(cat_dir, tiles_dir))
    assert report.failed_tiles == [tile]
    rc = hubcat(["verify", str(cat_dir), "--tile-store", str(tiles_dir)])
    captured = capsys.readouterr()
    assert rc == 1 and tile in captured.err and "FAIL" in captured.out


def test_one_tiles_pixels(copy):
    import zarr

    cat_dir, tiles_dir, _key = copy
    cat = open_copy(cat_dir, tiles_dir)
    tile = cat.metadata()["tile_id"].iloc[1]
    row = cat.tile_store.metadata().set_index("tile_id").loc[tile]
    arr = zarr.open_array(
        str(tiles_dir), path=f"tiles/{row['mosaic_id']}/z{int(row['zoom'])}", mode="r+"
    )
    pixels = np.array(arr[int(row["tile_index"])])
    pixels[100, 100] += 0.25
    arr[int(row["tile_index"])] = pixels
    cat = open_copy(cat_dir, tiles_dir)
    report = pv.verify_catalogue(cat)
    assert report.failed_tiles == [tile]
    assert f"tile {tile} (leaf 1): its pixels" in fail_messages(report)
    with pytest.raises(pv.VerificationError, match=f"tile {tile}: its pixels"):
        cat.verify(tile)
    other = cat.metadata()["tile_id"].iloc[0]
    assert cat.verify(other).leaf_index == 0  # the other tiles still verify


def test_one_metadata_value_of_a_leaf(copy):
    cat_dir, tiles_dir, _key = copy
    m = manifest(cat_dir)
    seg = m["segments"][0]
    shard = seg["metadata_shards"][0]
    path = cat_dir / shard["key"]
    meta = pd.read_parquet(path)
    row = int(np.flatnonzero(meta["leaf_index"].to_numpy() == 2)[0])
    tile = meta["tile_id"].iloc[row]
    meta.loc[row, "x0"] = int(meta.loc[row, "x0"]) + 1
    buf = io.BytesIO()
    meta.to_parquet(buf, index=False)
    path.write_bytes(buf.getvalue())
    shard["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()  # hide it from open()
    shard["bytes"] = len(buf.getvalue())
    write_manifest(cat_dir, m)
    report = pv.verify_catalogue(open_copy(cat_dir, tiles_dir))
    assert report.failed_tiles == [tile]
    text = fail_messages(report)
    assert f"tile {tile} (leaf 2): x0=" in text and "differs from its signed leaf" in text
    assert "its record differs from its signed leaf: box=" in text


def test_the_manifests_root(copy, capsys):
    cat_dir, tiles_dir, _key = copy
    m = manifest(cat_dir)
    m["provenance"]["root"] = "ab" * 32
    write_manifest(cat_dir, m)
    report = pv.verify_catalogue(open_copy(cat_dir, tiles_dir))
    assert not report.ok and report.failed_tiles == []
    assert "manifest.json provenance.root is 'abab" in fail_messages(report)
    assert hubcat(["verify", str(cat_dir), "--tile-store", str(tiles_dir)]) == 1
    assert "provenance.root" in capsys.readouterr().out


def test_the_signature(copy):
    cat_dir, tiles_dir, _key = copy
    m = manifest(cat_dir)
    body, sig_line = m["provenance"]["checkpoint"].rstrip("\n").rsplit("\n", 1)
    name, blob = sig_line.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(blob))
    raw[10] ^= 0x80
    forged = f"{body}\n{name} {base64.b64encode(bytes(raw)).decode()}\n"
    m["provenance"]["checkpoint"] = forged
    write_manifest(cat_dir, m)
    report = pv.verify_catalogue(open_copy(cat_dir, tiles_dir))
    assert not report.ok
    text = fail_messages(report)
    assert "signature: the signature by hubcat+" in text and "does not match" in text
    assert "provenance/checkpoints/" in text  # the stored copy no longer matches either


def test_a_checkpoint_signed_by_another_key(signed, tmp_path):
    from catalog import Catalogue

    cat_dir, _tiles, _key, _keys = signed
    other = pv.generate_signing_key("hubcat")
    pub = pv.write_key_pair(other, tmp_path / "other.key")
    report = pv.verify_catalogue(Catalogue.open(cat_dir), public_key=pub)
    assert [f.kind for f in report.failures] == ["signature"]
    assert f"not signed by key {other.verifier.label}" in fail_messages(report)


def test_the_leaves_file(copy):
    cat_dir, tiles_dir, _key = copy
    key = first_leaf_shard(cat_dir)
    path = cat_dir / key
    lines = path.read_bytes().split(b"\n")
    doc = json.loads(lines[0])
    doc["zoom"] = 3
    lines[0] = pv.canonical_json(doc)
    path.write_bytes(b"\n".join(lines))
    report = pv.verify_catalogue(open_copy(cat_dir, tiles_dir))
    text = fail_messages(report)
    assert "provenance/leaves/ hash to root" in text and "altered" in text
    assert f"leaf shard {key} hashes to" in text  # the damaged object is named
    assert key in [f.subject for f in report.failures if f.kind == "file"]
    assert report.failed_tiles == [doc["tile_id"]]


# --------------------------------------------------------------------------- bad input


def test_missing_provenance_files(copy, capsys):
    cat_dir, tiles_dir, _key = copy
    key = first_leaf_shard(cat_dir)
    (cat_dir / key).unlink()
    with pytest.raises(pv.ProvenanceNotFoundError, match=f"provenance shard {key}, named by"):
        pv.verify_catalogue(open_copy(cat_dir, tiles_dir))
    assert hubcat(["verify", str(cat_dir)]) == 1
    err = capsys.readouterr().err
    assert f"{key}, named by the manifest, is missing" in err and "Traceback" not in err
    m = manifest(cat_dir)
    del m["provenance"]
    write_manifest(cat_dir, m)
    with pytest.raises(pv.ProvenanceNotFoundError, match="no provenance record"):
        pv.verify_catalogue(open_copy(cat_dir, tiles_dir))


def test_unknown_tile_and_bad_public_key(signed, tmp_path, capsys):
    from catalog import Catalogue, UnknownTileError

    cat_dir, *_ = signed
    with pytest.raises(UnknownTileError, match="no-such-tile"):
        pv.verify_catalogue(Catalogue.open(cat_dir), tile_id="no-such-tile")
    (tmp_path / "bad.pub").write_text("not a key\n")
    assert hubcat(["verify", str(cat_dir), "--public-key", str(tmp_path / "bad.pub")]) == 1
    assert "bad.pub is not a signed-note verifier key" in capsys.readouterr().err
    assert hubcat(["verify", str(cat_dir), "--public-key", str(tmp_path / "none.pub")]) == 1
    assert "none.pub does not exist" in capsys.readouterr().err
    (tmp_path / "old").write_text("garbage\n")
    assert hubcat(["verify", str(cat_dir), "--against", str(tmp_path / "old")]) == 1
    err = capsys.readouterr().err
    assert "old checkpoint" in err and "body lines" in err and "Traceback" not in err


# --------------------------------------------------------------------------- versions


def test_versions_are_consistent(catalogue_dir, tmp_path, capsys):
    """The shared two-version catalogue: v2 extends v1; a tile of v2 is beyond v1's tree."""
    from catalog import Catalogue

    v1 = Catalogue.open(catalogue_dir, version=1)
    v2 = Catalogue.open(catalogue_dir)
    n1, n2 = len(v1), len(v2)
    assert n2 > n1
    old = catalogue_dir / "provenance" / "checkpoints" / str(n1)
    report = pv.verify_catalogue(v2, against=old)
    assert report.ok, report.summary()
    assert report.consistency.ok and report.consistency.old_size == n1
    assert f"consistency with the previous version: {n1} -> {n2} leaves" in report.checks
    assert "not signed" in report.warnings[0]
    prov = v2.manifest["provenance"]
    assert pv.verify_consistency(
        n1, n2, v1.manifest["provenance"]["root"], prov["root"], prov["consistency_proof"]
    )
    assert pv.verify_catalogue(v1).ok  # the old version still verifies on its own
    # a rewritten history: a checkpoint of the same size with another root
    forged = pv.Checkpoint(prov["origin"], n1, hashlib.sha256(b"other").digest())
    (tmp_path / "forged").write_text(forged.text)
    rc = hubcat(["verify", str(catalogue_dir), "--against", str(tmp_path / "forged")])
    out = capsys.readouterr().out
    assert rc == 1 and "does not extend" in out
    report = pv.verify_catalogue(v1, against=catalogue_dir / "provenance" / "checkpoint")
    assert "cannot extend" in fail_messages(report)
    # the recorded proof from the previous version is checked too
    shutil.copytree(catalogue_dir, tmp_path / "copy")
    m = manifest(tmp_path / "copy")
    m["provenance"]["consistency_proof"][0] = "00" * 32
    write_manifest(tmp_path / "copy", m)
    report = pv.verify_catalogue(Catalogue.open(tmp_path / "copy"))
    assert "recorded consistency proof from the previous version" in fail_messages(report)
    # a tile of v2 is not in v1
    from catalog import UnknownTileError

    late = v2.metadata()["tile_id"].iloc[n2 - 1]
    with pytest.raises(UnknownTileError, match=late):
        pv.verify_tile(v1, late)


def test_leaf_index_beyond_the_tree_size(copy):
    """A validly signed checkpoint that covers fewer rows than the catalogue holds."""
    cat_dir, tiles_dir, key = copy
    m = manifest(cat_dir)
    n = m["provenance"]["tree_size"]
    leaves = (cat_dir / first_leaf_shard(cat_dir)).read_bytes().split(b"\n")[: n - 1]
    short = pv.Checkpoint(m["provenance"]["origin"], n - 1, pv.merkle_root(leaves)).signed(key)
    m["provenance"].update(checkpoint=short.text, tree_size=n - 1, root=short.root.hex())
    m["versions"][-1]["merkle_root"] = short.root.hex()
    write_manifest(cat_dir, m)
    (cat_dir / "provenance" / "checkpoints" / str(n - 1)).write_text(short.text)
    cat = open_copy(cat_dir, tiles_dir)
    last = cat.metadata()["tile_id"].iloc[n - 1]
    with pytest.raises(
        pv.VerificationError, match=f"tile {last} is row {n - 1}, beyond the {n - 1}"
    ):
        pv.verify_tile(cat, last)
    report = pv.verify_catalogue(cat, tile_id=last)
    assert f"tile {last} is row {n - 1}, beyond the {n - 1} leaves" in fail_messages(report)
    assert cat.verify(cat.metadata()["tile_id"].iloc[0]).tree_size == n - 1


def test_keygen_cli(tmp_path, capsys):
    assert hubcat(["keygen", "--out", str(tmp_path), "--name", "ops.example"]) == 0
    out = capsys.readouterr().out
    key = pv.load_signing_key(tmp_path / "hubcat.key")
    assert key.name == "ops.example" and key.verifier.text in out
    assert pv.load_verifier_key(tmp_path / "hubcat.key.pub") == key.verifier
    assert hubcat(["keygen", "--out", str(tmp_path)]) == 1
    assert "refusing to replace" in capsys.readouterr().err
    assert pv.load_signing_key(tmp_path / "hubcat.key").seed == key.seed


# --------------------------------------------------------------------------- the notebook

NOTEBOOK = "provenance.ipynb"


def test_provenance_notebook_is_stored_executed():
    assert_outputs_stored(NOTEBOOK)


@pytest.mark.notebook
@pytest.mark.slow
def test_provenance_notebook_runs(signed, tmp_path, monkeypatch):
    """notebooks/provenance.ipynb, top to bottom, on the signed catalogue."""
    cat_dir, _tiles, _key, keys = signed
    monkeypatch.setenv("HUBCAT_CATALOGUE", str(cat_dir))
    monkeypatch.setenv("HUBCAT_PUBLIC_KEY", str(keys / "hubcat.key.pub"))
    text = run_notebook(NOTEBOOK, tmp_path)
    assert "inclusion proof of tile" in text
    assert "pixels    True" in text and "embedding True" in text
    assert "lead to the signed root: True" in text
    assert "signed by hubcat+" in text and "root matches: True" in text
    assert f"provenance of {cat_dir}: OK" in text
    good, bad = text.split("ok: False")
    assert "False" not in good
    assert "its embedding" in bad


# --------------------------------------------------------------------------- on S3


@pytest.mark.s3
def test_verify_a_catalogue_on_s3(signed, s3_server):
    """The same catalogue copied to a loopback S3 server verifies; a changed object is named."""
    from catalog import Catalogue
    from hubcat.storage import open_object_store
    from tiling import TileStore

    cat_dir, tiles_dir, key, keys = signed
    uri = s3_server.create_bucket("provenance-tests") + "/cat"
    store = open_object_store(uri)
    for path in sorted(p for p in cat_dir.rglob("*") if p.is_file()):
        store.put(path.relative_to(cat_dir).as_posix(), path.read_bytes())
    ts = TileStore.open(tiles_dir)
    cat = Catalogue.open(uri, tile_store=ts)
    tile = cat.metadata()["tile_id"].iloc[3]
    report = pv.verify_catalogue(cat, tile_id=tile, public_key=keys / "hubcat.key.pub")
    assert report.ok, report.summary()
    assert cat.verify(tile).root == cat.manifest["provenance"]["root"]
    # a build on S3 writes the log there
    prov = pv.build_provenance(cat.records(), open_object_store(uri + "-rebuilt"), signing_key=key)
    assert prov["root"] == cat.manifest["provenance"]["root"]
    # change one object in the bucket: one leaf of the log
    shard = cat.manifest["provenance"]["files"]["leaf_shards"][0]["key"]
    leaves = store.get(shard).split(b"\n")
    doc = json.loads(leaves[3])
    doc["volunteers"] = ["mallory"]
    leaves[3] = pv.canonical_json(doc)
    store.put(shard, b"\n".join(leaves))
    report = pv.verify_catalogue(Catalogue.open(uri, tile_store=ts))
    assert report.failed_tiles == [tile]
    assert "volunteers" in fail_messages(report)
