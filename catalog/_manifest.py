"""The catalogue's manifest: its format, reading one version's manifest, and shared helpers."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from catalog.errors import CatalogNotFoundError, CorruptCatalogError, IncompatibleCatalogError
from hubcat.errors import StoreNotFoundError
from hubcat.storage import ObjectStore

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "check_compatible",
    "dumps",
    "now",
    "read_manifest",
    "sha256_hex",
    "software_version",
    "version_key",
]

#: Name and layout version of the catalogue format this release writes and reads.
FORMAT = "hubcat-catalogue"
FORMAT_VERSION = 1


def software_version() -> str:
    """Version of the installed hubcat distribution."""
    try:
        return _dist_version("hubcat")
    except PackageNotFoundError:  # a source tree that is not installed
        return "0.0.0+unknown"


def sha256_hex(data: bytes) -> str:
    """sha256 (hex) of ``data``."""
    return hashlib.sha256(data).hexdigest()


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def version_key(version: int) -> str:
    """Key of the manifest of ``version``."""
    return f"versions/{version:06d}/manifest.json"


def dumps(manifest: dict) -> bytes:
    """Canonical JSON bytes of a manifest."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def read_manifest(store: ObjectStore, version: int | None) -> dict:
    key = "manifest.json" if version is None else version_key(int(version))
    try:
        data = store.get(key)
    except StoreNotFoundError:
        if version is not None and store.exists("manifest.json"):
            latest = json.loads(store.get("manifest.json"))
            msg = (
                f"catalogue {store.uri} has no version {version}; its versions are "
                f"{[v['version'] for v in latest.get('versions', [])]}"
            )
        else:
            msg = (
                f"no catalogue at {store.uri} (no manifest.json); build one with "
                f"`hubcat build --store TILE_STORE --out {store.uri}`"
            )
        raise CatalogNotFoundError(msg) from None
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        msg = f"{store.uri}/{key} is not valid JSON: the catalogue manifest is corrupt"
        raise CorruptCatalogError(msg) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        msg = f"{store.uri}/{key} is not a hubcat catalogue manifest (format {manifest.get('format') if isinstance(manifest, dict) else None!r})"
        raise IncompatibleCatalogError(msg)
    fv = manifest.get("format_version")
    if fv != FORMAT_VERSION:
        msg = (
            f"catalogue {store.uri} has format version {fv!r} (written by hubcat "
            f"{manifest.get('software_version', '?')}); this hubcat {software_version()} reads format "
            f"version {FORMAT_VERSION}. Open it with a matching hubcat, or rebuild it from the tile "
            "store with `hubcat build`"
        )
        raise IncompatibleCatalogError(msg)
    return manifest


def check_compatible(manifest: dict, model: dict, what: str) -> None:
    have = manifest["model"]
    for key in ("digest", "weights_sha256", "dim"):
        if have.get(key) != model.get(key):
            msg = (
                f"{what} was embedded with model {model.get('name')!r} ({key} {model.get(key)}), "
                f"but catalogue {manifest.get('uri', '')} holds {have.get('name')!r} ({key} "
                f"{have.get(key)}); build a separate catalogue for each model"
            )
            raise IncompatibleCatalogError(msg)
