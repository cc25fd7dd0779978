"""``hubcat build`` and ``hubcat query`` on the real-HST test stores."""

from __future__ import annotations

import json
import shutil

import pytest

from catalog import Catalogue
from pipeline.cli import main


@pytest.fixture(scope="module")
def cli_catalogue(tmp_path_factory, stores):
    out = tmp_path_factory.mktemp("cli") / "cat"
    assert main(["build", "--store", stores["main"][0].uri, "--out", str(out)]) == 0
    assert main(["build", "--store", stores["ngc"][0].uri, "--out", str(out)]) == 0
    return out


def test_build_and_append(cli_catalogue, capsys, stores):
    cat = Catalogue.open(cli_catalogue)
    assert cat.version == 2 and len(cat) == sum(len(s[1].read_all()[0]) for s in stores.values())
    assert main(["build", "--store", stores["ngc"][0].uri, "--out", str(cli_catalogue)]) == 0
    assert "still version 2" in capsys.readouterr().out


def test_query_tile_json(cli_catalogue, capsys):
    tid = Catalogue.open(cli_catalogue).metadata()["tile_id"][0]
    capsys.readouterr()
    assert main(["query", str(cli_catalogue), "--tile", tid, "-k", "3", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"][0]["tile_id"] == tid and len(out["rows"]) == 3


def test_query_position_filters_and_formats(cli_catalogue, capsys):
    meta = Catalogue.open(cli_catalogue).metadata()
    row = meta[meta["zoom"] == 2].iloc[0]
    capsys.readouterr()
    args = ["query", str(cli_catalogue), "--ra", str(row["ra"]), "--dec", str(row["dec"])]
    assert main([*args, "--filter", "zoom=2", "-k", "2", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("tile_id,similarity") and lines[1].startswith(row["tile_id"])
    assert main([*args, "--cone", "30arcsec", "--format", "votable"]) == 0
    assert "<VOTABLE" in capsys.readouterr().out
    assert main([*args, "--cone", "0.5 arcmin", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"]
    assert main([*args, "--filter", f"region={row['ra']},{row['dec']},10arcsec", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"]
    assert main(["query", str(cli_catalogue), "--list", "--filter", "zoom=2"]) == 0
    assert main(["query", str(cli_catalogue), "--ra", "10", "--dec", "-80"]) == 0
    assert "outside every tile footprint" in capsys.readouterr().err


def test_query_image(cli_catalogue, capsys, hst_dir):
    capsys.readouterr()
    image = str(hst_dir / "mpdaf_HST-HDFS.fits")
    assert main(["query", str(cli_catalogue), "--image", image, "-k", "2", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert len(rows) == 2 and "HDFS" in rows[0]["source"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tile", "nope"], "hubcat query CATALOGUE --list"),
        (["--ra", "1"], "--ra needs --dec"),
        (["--tile", "x", "--filter", "colour=red"], "KEY=VALUE with KEY one of"),
        (["--tile", "x", "--filter", "date=2001"], "START..END"),
    ],
)
def test_query_errors(cli_catalogue, capsys, argv, message):
    assert main(["query", str(cli_catalogue), *argv]) == 1
    assert message in capsys.readouterr().err


def test_build_errors_and_index_repair(tmp_path, cli_catalogue, capsys, stores):
    assert main(["build", "--out", str(tmp_path / "x")]) == 1
    assert "--store" in capsys.readouterr().err
    empty = tmp_path / "tiles"
    from tiling import TileStore

    TileStore.create(empty)
    assert main(["build", "--store", str(empty), "--out", str(tmp_path / "y")]) == 1
    assert "no embeddings" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(cli_catalogue, broken)
    cat = Catalogue.open(broken)
    (broken / cat.manifest["index"]["key"]).unlink()
    assert main(["query", str(broken), "--list"]) == 1
    assert "rebuild-index" in capsys.readouterr().err
    assert main(["build", "--out", str(broken), "--rebuild-index"]) == 0
    assert main(["query", str(broken), "--list"]) == 0
    merged = tmp_path / "merged"
    parts = []
    for name in ("main", "ngc"):
        part = tmp_path / f"part-{name}"
        assert main(["build", "--store", stores[name][0].uri, "--out", str(part)]) == 0
        parts.append(str(part))
    assert main(["build", "--out", str(merged), "--merge", *parts]) == 0
    assert len(Catalogue.open(merged)) == len(cat)


@pytest.mark.parametrize("bad", ["30", "30 m", "thirty"])
def test_query_cone_refuses_an_angle_without_unit(cli_catalogue, capsys, bad):
    """One rule for angles in the API and the CLI: a bare number is refused, naming the fix."""
    with pytest.raises(SystemExit) as exc:
        main(["query", str(cli_catalogue), "--ra", "10", "--dec", "-80", "--cone", bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--cone: {bad!r} is not an angle with a unit" in err and "30arcsec" in err


def test_region_filter_refuses_a_radius_without_unit(cli_catalogue, capsys):
    assert main(["query", str(cli_catalogue), "--list", "--filter", "region=10,-80,30"]) == 1
    assert "has no unit" in capsys.readouterr().err


def test_signing_key_spelling_and_json_everywhere(cli_catalogue, tmp_path, capsys, stores):
    """build takes --signing-key (and the old --sign-key); --json prints one object."""
    from catalog.provenance import generate_signing_key, write_key_pair

    key = generate_signing_key("example.org/test-log")
    path = tmp_path / "op.key"
    write_key_pair(key, path)
    for flag, out in (("--signing-key", "a"), ("--sign-key", "b")):
        capsys.readouterr()
        argv = ["build", "--store", stores["ngc"][0].uri, "--out", str(tmp_path / out)]
        assert main([*argv, flag, str(path), "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["signed"] is True and summary["tiles"] == len(stores["ngc"][0].metadata())
        cp = Catalogue.open(tmp_path / out).manifest["provenance"]["checkpoint"]
        assert cp.splitlines()[0] == "example.org/test-log"  # origin == key name
    n = len(stores["ngc"][0].metadata())
    argv = ["build", "--store", stores["ngc"][0].uri, "--out", str(tmp_path / "a"), "--json"]
    assert main([*argv, "--signing-key", str(path)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["skipped"] == {"already_in_catalogue": n, "not_embedded": 0}
    assert "already holds every embedded tile" in again["note"]
    assert main(["verify", str(tmp_path / "a"), "--public-key", f"{path}.pub", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
