"""``hubcat serve``: the catalogue as an HTTP service, for people who do not run Python.

>>> from catalog import Catalogue
>>> from pipeline.serve import ServeConfig, create_app
>>> app = create_app(Catalogue.open("demo-catalogue"), config=ServeConfig(anonymous="all"))  # doctest: +SKIP

Routes (OpenAPI at ``/openapi.json``): ``/api/similar/tile/{id}``, ``/api/similar/position``,
``/api/similar/image`` (FITS or PNG upload), ``/api/cone``, ``/api/tiles/{id}`` with
``cutout.png``, ``cutout.fits`` and ``provenance``, IVOA Simple Cone Search at ``/scs``, and a web
page at ``/``. API keys with scopes (:class:`KeyStore`), per-key rate limits and daily quotas
(:class:`QuotaKeeper`) and a signed usage ledger (:class:`UsageLedger`, :func:`read_ledger`).
"""

from __future__ import annotations

from pipeline.serve._app import STATIC_DIR, create_app
from pipeline.serve._config import ANONYMOUS_MODES, COSTS, ServeConfig
from pipeline.serve._keys import SCOPES, ApiKey, KeyStore
from pipeline.serve._quota import Limits, QuotaKeeper
from pipeline.serve._server import default_usage_path, open_service, run_server
from pipeline.serve._usage import CallerUsage, LedgerReport, UsageLedger, read_ledger
from pipeline.serve.errors import (
    BadRequestError,
    ForbiddenError,
    KeyFileError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServeError,
    UnauthorizedError,
    UsageLedgerError,
)

__all__ = [
    "ANONYMOUS_MODES",
    "COSTS",
    "SCOPES",
    "STATIC_DIR",
    "ApiKey",
    "BadRequestError",
    "CallerUsage",
    "ForbiddenError",
    "KeyFileError",
    "KeyStore",
    "LedgerReport",
    "Limits",
    "NotFoundError",
    "PayloadTooLargeError",
    "QuotaKeeper",
    "RateLimitedError",
    "ServeConfig",
    "ServeError",
    "UnauthorizedError",
    "UsageLedger",
    "UsageLedgerError",
    "create_app",
    "default_usage_path",
    "open_service",
    "read_ledger",
    "run_server",
]
