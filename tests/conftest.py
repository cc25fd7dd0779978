"""Fixtures shared by the whole test suite.

Real Hubble files live in ``../shared/data/hst/`` beside the checkout (override with the
``HUBCAT_TEST_DATA`` environment variable); tests that need them skip with a reason when the
folder is absent. Synthetic mosaics are small, seeded, and carry a real celestial WCS.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hubcat.synthetic import write_synthetic_mosaic

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HUBCAT_SHARED", REPO.parent / "shared"))
HST_DIR = Path(os.environ.get("HUBCAT_TEST_DATA", SHARED / "data" / "hst"))
RFC6962_DIR = SHARED / "data" / "rfc6962"


@pytest.fixture(scope="session", autouse=True)
def _ir_cache(tmp_path_factory) -> None:
    """Converted models (OpenVINO IR, ONNX) go to a folder of this session, not ~/.cache.

    Set in the environment so the CLI and worker processes the tests start use it too.
    """
    if not os.environ.get("HUBCAT_IR_CACHE"):
        os.environ["HUBCAT_IR_CACHE"] = str(tmp_path_factory.mktemp("ir-cache"))


@pytest.fixture(scope="session")
def hst_dir() -> Path:
    """Folder of real HST FITS files (skips when absent)."""
    if not HST_DIR.is_dir():
        pytest.skip(f"real HST test files not found at {HST_DIR} (set HUBCAT_TEST_DATA)")
    return HST_DIR


@pytest.fixture(scope="session")
def rfc6962_dir() -> Path:
    """Folder of RFC 6962 conformance vectors (skips when absent)."""
    if not RFC6962_DIR.is_dir():
        pytest.skip(f"RFC 6962 vectors not found at {RFC6962_DIR}")
    return RFC6962_DIR


@pytest.fixture
def synthetic_mosaic(tmp_path: Path):
    """Factory: ``synthetic_mosaic(name="m.fits", **kwargs) -> Path`` of a new synthetic FITS."""

    def make(name: str = "synthetic.fits", **kwargs) -> Path:
        return write_synthetic_mosaic(tmp_path / name, **kwargs)

    return make


@pytest.fixture(scope="session")
def s3_server():
    """Start moto's S3 server on 127.0.0.1 for the session, with dummy credentials in the env.

    ``AWS_ENDPOINT_URL`` points at it while the session runs, so boto3 (and ``hubcat`` run as a
    subprocess) talk to it and never to AWS.
    """
    pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 tests")
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    from tests._s3_support import S3Server

    server = S3Server()
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=server.endpoint_url,
    )
    for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(key, None)
    try:
        yield server
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_S3_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
)


@pytest.fixture(scope="session", autouse=True)
def _operator_key_outside_home(tmp_path_factory):
    """Commands that sign catalogues use a key made for this test session, never ~/.hubcat."""
    if "HUBCAT_SIGNING_KEY" in os.environ:
        os.environ.setdefault(
            "HUBCAT_LEDGER_KEY", str(tmp_path_factory.mktemp("ledger-key") / "ledger.key")
        )
        yield
        return
    folder = tmp_path_factory.mktemp("operator-key")
    os.environ["HUBCAT_SIGNING_KEY"] = str(folder / "hubcat.key")
    os.environ.setdefault("HUBCAT_LEDGER_KEY", str(folder / "ledger.key"))
    yield
    os.environ.pop("HUBCAT_SIGNING_KEY", None)
    os.environ.pop("HUBCAT_LEDGER_KEY", None)


# --------------------------------------------------------------------------- small real catalogues
# Two tile stores keep the embedding cost low (about 10 tiles, each embedded once per session):
#
# - ``main``: the mpdaf HDFS field (WFPC2 F606W) and the Frontier Fields Abell 2744 cutout
#   (WFC3/IR F105W, gzipped float64) at zooms 1 and 2;
# - ``ngc``: the drizzled ACS/HRC 47 Tuc mosaic (empty primary header) at zoom 2 only.
#
# The shared catalogue is version 1 = ``main``, version 2 = ``main`` + ``ngc`` (appended).
# Used by the catalogue tests (tests/catalog) and the service tests (tests/pipeline/serve).

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
