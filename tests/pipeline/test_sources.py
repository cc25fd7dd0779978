"""Resolving operator source specs: paths, folders, globs, S3 objects and prefixes, MAST ids."""

from __future__ import annotations

import shutil

import pytest

from pipeline._sources import mast_uri, resolve_sources
from pipeline.errors import SourceSpecError
from tests._s3_support import mast_key


def test_mast_uri():
    assert (
        mast_uri("j8bt06nyq", "drz")
        == "s3://stpubdata/hst/public/j8bt/j8bt06nyq/j8bt06nyq_drz.fits"
    )
    assert mast_uri("J8BT06NYQ", "_FLT").endswith("j8bt06nyq_flt.fits")


@pytest.mark.parametrize("bad", ["j8bt06ny", "j8bt06nyq0", "j8bt/6nyq", ""])
def test_bad_mast_id(bad):
    with pytest.raises(SourceSpecError, match="9-character HST dataset"):
        mast_uri(bad)


def test_bad_suffix():
    with pytest.raises(SourceSpecError, match="suffix 'd'"):
        mast_uri("j8bt06nyq", "d")


def test_local_paths_globs_folders(tmp_path):
    for name in ("a.fits", "b.fits.gz", "c.txt", "sub/d.fits"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    specs, rejected = resolve_sources(
        [
            str(tmp_path / "*.fits*"),
            str(tmp_path),
            str(tmp_path / "a.fits"),
            str(tmp_path / "nope.fits"),
        ]
    )
    uris = [s.uri for s in specs]
    assert uris == [
        str(tmp_path / n) for n in ("a.fits", "b.fits.gz", "sub/d.fits")
    ]  # no duplicates
    assert [r.given for r in rejected] == [str(tmp_path / "nope.fits")]
    assert "does not exist" in rejected[0].reason


def test_glob_and_folder_without_fits(tmp_path):
    (tmp_path / "empty").mkdir()
    specs, rejected = resolve_sources([str(tmp_path / "*.fits"), str(tmp_path / "empty")])
    assert specs == []
    assert "no file matches" in rejected[0].reason
    assert "holds no FITS file" in rejected[1].reason


def test_list_file(tmp_path):
    (tmp_path / "m.fits").write_bytes(b"x")
    listing = tmp_path / "sources.txt"
    listing.write_text(f"# batch 1\n{tmp_path / 'm.fits'}\n\n  {tmp_path / 'gone.fits'}  # typo\n")
    specs, rejected = resolve_sources([f"@{listing}"], mast=["j8bt06nyq"])
    assert [s.uri for s in specs] == [str(tmp_path / "m.fits"), mast_uri("j8bt06nyq", "drz")]
    assert specs[1].given == "mast:j8bt06nyq"
    assert len(rejected) == 1
    with pytest.raises(SourceSpecError, match="cannot read the list file"):
        resolve_sources([f"@{tmp_path / 'missing.txt'}"])


@pytest.mark.s3
def test_s3_objects_and_prefixes(s3_server, hst_dir, tmp_path):
    s3_server.create_bucket("hubcat-sources")
    client = s3_server.client()
    for key in (
        "batch/a.fits",
        "batch/b.fits.gz",
        "batch/notes.txt",
        "batch/deep/c.fits",
        "other/x.fits",
    ):
        client.put_object(Bucket="hubcat-sources", Key=key, Body=b"x")
    specs, rejected = resolve_sources(
        [
            "s3://hubcat-sources/batch/",
            "s3://hubcat-sources/other/x.fits",
            "s3://hubcat-sources/none/",
        ],
        endpoint_url=s3_server.endpoint_url,
    )
    assert [s.uri for s in specs] == [
        "s3://hubcat-sources/batch/a.fits",
        "s3://hubcat-sources/batch/b.fits.gz",
        "s3://hubcat-sources/batch/deep/c.fits",
        "s3://hubcat-sources/other/x.fits",
    ]
    assert (
        len(rejected) == 1
        and "no FITS object under s3://hubcat-sources/none/" in rejected[0].reason
    )
    # a list file can live in S3 too
    client.put_object(
        Bucket="hubcat-sources", Key="lists/l.txt", Body=b"s3://hubcat-sources/other/x.fits\n"
    )
    specs, _ = resolve_sources(
        ["@s3://hubcat-sources/lists/l.txt"], endpoint_url=s3_server.endpoint_url
    )
    assert [s.uri for s in specs] == ["s3://hubcat-sources/other/x.fits"]


@pytest.mark.s3
def test_mast_dataset_reads_anonymously(s3_server, hst_dir, tmp_path):
    """A MAST id resolves to the public layout, and tiling's reader can fetch it unsigned."""
    from hubcat.storage import open_object_store

    s3_server.create_bucket("stpubdata")
    local = tmp_path / "j8bt06nyq_flt.fits"
    shutil.copy(hst_dir / "j8bt06nyq_flt.fits", local)
    s3_server.client().upload_file(
        str(local), "stpubdata", mast_key("j8bt06nyq", "flt"), ExtraArgs={"ACL": "public-read"}
    )
    specs, _ = resolve_sources(mast=["j8bt06nyq"], suffix="flt")
    uri = specs[0].uri
    base, _, key = uri.rpartition("/")
    store = open_object_store(base)
    assert store.anonymous
    assert store.get_range(key, 0, 6) == b"SIMPLE"
