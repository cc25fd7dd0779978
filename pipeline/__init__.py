"""hubcat's command line and end-to-end orchestration.

>>> from pipeline import run_pipeline
>>> summary = run_pipeline(["mosaics/*.fits"], "catalogue/")   # doctest: +SKIP
>>> summary.merkle_root                                          # doctest: +SKIP
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hubcat")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from pipeline.reprocess import model_versions, reprocess_catalogue
from pipeline.run import RunSummary, SourceOutcome, run_pipeline

__all__ = [
    "RunSummary",
    "SourceOutcome",
    "__version__",
    "model_versions",
    "reprocess_catalogue",
    "run_pipeline",
]
