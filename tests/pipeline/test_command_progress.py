"""Long commands draw a progress bar on stderr and end with what was done, skipped and why."""

from __future__ import annotations

import json

from pipeline.cli import main


def test_tile_shows_progress_and_summarises_done_skipped_failed(tmp_path, hst_dir, capsys):
    good = hst_dir / "mpdaf_HST-HDFS.fits"
    bad = hst_dir / "j8bt06nyq_flt.fits"
    store = tmp_path / "tiles"
    assert main(["tile", str(good), str(bad), "--store", str(store), "--zooms", "1"]) == 3
    out, err = capsys.readouterr()
    assert "tiling" in err and "2/2" in err  # the bar, on stderr
    assert "1 tiled" in out and "1 failed" in out and "not a drizzled mosaic" in out
    # again: the good source is skipped (already present), and said so; no bar with --no-progress
    argv = ["tile", str(good), "--store", str(store), "--no-progress"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "1 already present" in out and "tiling" not in err
    # --json: one object on stdout, no bar
    assert main([*argv[:-1], "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["failed"] == {} and err == ""


def test_embed_on_the_grid_draws_its_bar_from_the_grids_callback(tmp_path, capsys):
    from hubcat.synthetic import write_synthetic_mosaic
    from tiling import TileStore, TilingConfig

    source = write_synthetic_mosaic(tmp_path / "g.fits", shape=(230, 230), n_sources=10)
    store = TileStore.create(tmp_path / "tiles", TilingConfig(zooms=(1,), measure_sources=False))
    store.add_mosaic(source)
    argv = ["embed", "--store", store.uri, "--workers", "1", "--threads", "1"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "embedding" in err and "1/1" in err
    assert "1 unit(s) embedded, 0 already done, 0 not accepted" in out
    assert "units:" not in out  # the grid's own report is not printed: the command summarises
    assert main(argv) == 0
    assert "0 unit(s) embedded, 1 already done" in capsys.readouterr().out
