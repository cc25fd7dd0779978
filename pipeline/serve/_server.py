"""Opening a catalogue, its keys and its ledger, and running the service with uvicorn."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from pipeline.serve._config import ServeConfig

__all__ = ["default_usage_path", "open_service", "run_server"]


def default_usage_path(keys: str | os.PathLike[str] | None) -> Path | None:
    """Where the usage ledger lives by default: ``<KEYS_FILE>.usage.jsonl`` (none without keys)."""
    if keys is None:
        return None
    keys = Path(keys).expanduser()
    return keys.with_name(keys.name + ".usage.jsonl")


def open_service(
    catalogue: str,
    *,
    keys: str | os.PathLike[str] | None = None,
    usage: str | os.PathLike[str] | None = None,
    signing_key: str | os.PathLike[str] | None = None,
    config: ServeConfig | None = None,
):
    """The FastAPI application serving ``catalogue`` with its keys and usage ledger.

    Parameters
    ----------
    catalogue : str
        Folder or ``s3://`` prefix of a catalogue.
    keys : path, optional
        API key file (``hubcat serve keys add``); without it only anonymous access exists.
    usage : path, optional
        Usage ledger (default: beside the key file; none without keys).
    signing_key : path, optional
        Ed25519 key signing the ledger (default: the operator's key, as ``hubcat run`` uses).
    config : ServeConfig, optional

    Returns
    -------
    fastapi.FastAPI
    """
    from catalog import Catalogue
    from pipeline.serve._app import create_app
    from pipeline.serve._keys import KeyStore
    from pipeline.serve._usage import UsageLedger

    cat = Catalogue.open(catalogue)
    store = KeyStore(keys) if keys is not None else None
    if store is not None:
        store.keys()  # a malformed key file fails now, not on the first request
    usage = usage if usage is not None else default_usage_path(keys)
    ledger = None
    if usage is not None:
        from pipeline._keys import operator_signing_key

        ledger = UsageLedger(usage, operator_signing_key(signing_key))
    return create_app(cat, config=config, keys=store, ledger=ledger)


def _one_openmp_thread_per_search() -> None:
    """Search each query on one OpenMP thread.

    A service answers many small queries at once; FAISS's OpenMP threads, left to their default
    (one per core), spin between searches and take the cores from the threads answering
    requests.
    """
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a dependency of catalog
        return
    faiss.omp_set_num_threads(1)


def run_server(app, *, host: str = "127.0.0.1", port: int = 8000, announce=None) -> None:
    """Serve ``app`` with uvicorn until interrupted."""
    import faulthandler

    import uvicorn

    faulthandler.enable()  # a crash in a C extension leaves its traceback in the log
    _one_openmp_thread_per_search()

    from catalog import CatalogWarning

    # a query's warnings (k clipped, empty result) travel in the result's meta["message"]
    warnings.filterwarnings("ignore", category=CatalogWarning)
    say = announce or (lambda line: print(line, file=sys.stderr, flush=True))
    cat = app.state.catalogue
    say(
        f"hubcat serve: {cat.uri} (version {cat.version}, {len(cat)} tiles) on "
        f"http://{host}:{port}/  (API: /openapi.json, cone search: /scs)"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
