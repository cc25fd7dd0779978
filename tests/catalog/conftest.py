"""Fixtures of the catalogue tests: small tile stores cut from the real HST files, embedded once.

Two tile stores keep the embedding cost low (about 10 tiles, each embedded once per session):

- ``main``: the mpdaf HDFS field (WFPC2 F606W) and the Frontier Fields Abell 2744 cutout
  (WFC3/IR F105W, gzipped float64) at zooms 1 and 2;
- ``ngc``: the drizzled ACS/HRC 47 Tuc mosaic (empty primary header) at zoom 2 only.

The shared catalogue is version 1 = ``main``, version 2 = ``main`` + ``ngc`` (appended).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ABELL = "abell_2744_cd_galaxy_f105w.fits.gz"
HDFS = "mpdaf_HST-HDFS.fits"
NGC104 = "drizzle_reference_square_image_acs-hrc_f606w_ngc104.fits"


@pytest.fixture(scope="session")
def model():
    """The default model (tf_efficientnet_lite0 with its genuine ImageNet weights), loaded once."""
    from embeddings import load_model

    return load_model()


def _embedded_store(root: Path, sources: list[Path], zooms: tuple[int, ...], model):
    from embeddings import EmbeddingStore, embed_tiles
    from tiling import TileStore, TilingConfig

    ts = TileStore.create(root, TilingConfig(zooms=zooms, unit_size=16))
    for src in sources:
        ts.add_mosaic(str(src))
    es = EmbeddingStore(ts, model)
    for unit in ts.units():
        ids, tiles = ts.read_unit(unit.unit_key)
        es.write(unit.unit_key, ids, embed_tiles(model, tiles), volunteers=["local"])
    return ts, es


@pytest.fixture(scope="session")
def stores(tmp_path_factory, hst_dir, model):
    """``{"main": (TileStore, EmbeddingStore), "ngc": (...)}`` from the real HST files."""
    base = tmp_path_factory.mktemp("catalog-stores")
    return {
        "main": _embedded_store(base / "main", [hst_dir / HDFS, hst_dir / ABELL], (1, 2), model),
        "ngc": _embedded_store(base / "ngc", [hst_dir / NGC104], (2,), model),
    }


@pytest.fixture(scope="session")
def catalogue_dir(tmp_path_factory, stores) -> Path:
    """A two-version catalogue built from ``stores`` (do not modify it: copy it first)."""
    from catalog import Catalogue

    out = tmp_path_factory.mktemp("catalog") / "cat"
    Catalogue.build(out, *stores["main"])
    Catalogue.build(out, *stores["ngc"])
    return out


@pytest.fixture(scope="session")
def cat(catalogue_dir):
    """The shared catalogue, opened once (read-only use)."""
    from catalog import Catalogue

    return Catalogue.open(catalogue_dir)
