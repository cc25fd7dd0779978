"""Turn what an operator types into a list of mosaic URIs that :mod:`tiling` can read.

Accepted forms:

* a local FITS path (``.fits``, ``.fits.gz``, ``.fit``, ``.fts``), a folder (its FITS files), or a
  glob (``data/*.fits``);
* ``s3://bucket/key.fits`` (one object) or ``s3://bucket/prefix/`` (every FITS object below it,
  listed with boto3's paginator);
* a MAST dataset id with a product suffix: ``j8bt06nyq`` + ``drz`` ->
  ``s3://stpubdata/hst/public/j8bt/j8bt06nyq/j8bt06nyq_drz.fits`` (read anonymously);
* ``@FILE``: a list file (local or ``s3://``) with one of the above per line (``#`` comments).

A spec that resolves to nothing is not fatal: it becomes a :class:`Rejected` entry with the
reason, so the rest of the batch still runs.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hubcat.errors import HubcatError
from pipeline.errors import SourceSpecError

__all__ = [
    "FITS_SUFFIXES",
    "MAST_BUCKET",
    "Rejected",
    "SourceSpec",
    "mast_uri",
    "resolve_sources",
]

#: The public bucket of MAST's HST archive.
MAST_BUCKET = "stpubdata"
#: File names that are read as FITS mosaics when a folder or prefix is expanded.
FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fts", ".fit.gz", ".fts.gz")

_DATASET = re.compile(r"^[a-z0-9]{9}$")
_SUFFIX = re.compile(r"^[a-z0-9]{2,8}$")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class SourceSpec:
    """One mosaic to process.

    Attributes
    ----------
    uri : str
        Absolute local path or ``s3://bucket/key``.
    given : str
        What the operator typed that produced it (a path, glob, prefix, dataset id or list file).
    """

    uri: str
    given: str


@dataclass(frozen=True)
class Rejected:
    """A spec that resolved to no source, with the reason."""

    given: str
    reason: str


def mast_uri(dataset: str, suffix: str = "drz") -> str:
    """URI of a dataset's product in MAST's public HST bucket.

    Parameters
    ----------
    dataset : str
        HST dataset id (9 characters, e.g. ``j8bt06nyq``; case-insensitive).
    suffix : str
        Product suffix: ``drz``, ``drc``, ``flt``, ...

    Returns
    -------
    str
        ``s3://stpubdata/hst/public/<first 4 chars>/<dataset>/<dataset>_<suffix>.fits``

    Raises
    ------
    SourceSpecError
        If the id or suffix is malformed.
    """
    ds = dataset.strip().lower()
    sx = suffix.strip().lower().lstrip("_")
    if not _DATASET.match(ds):
        msg = (
            f"MAST dataset id {dataset!r} is not a 9-character HST dataset name "
            "(letters and digits, e.g. j8bt06nyq)"
        )
        raise SourceSpecError(msg)
    if not _SUFFIX.match(sx):
        msg = f"product suffix {suffix!r} is not valid; use drz, drc, flt, flc, ..."
        raise SourceSpecError(msg)
    return f"s3://{MAST_BUCKET}/hst/public/{ds[:4]}/{ds}/{ds}_{sx}.fits"


def _is_fits_name(name: str) -> bool:
    return name.lower().endswith(FITS_SUFFIXES)


def _read_list_file(spec: str, endpoint_url: str | None) -> list[str]:
    from hubcat.storage import open_object_store

    target = spec[1:]
    try:
        if target.startswith("s3://"):
            base, _, key = target.rpartition("/")
            text = open_object_store(base, endpoint_url=endpoint_url).get(key).decode("utf-8")
        else:
            text = Path(target).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, HubcatError) as exc:
        msg = f"cannot read the list file {target}: {exc}"
        raise SourceSpecError(msg) from None
    lines = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def _expand_s3(spec: str, endpoint_url: str | None) -> tuple[list[str], str | None]:
    from hubcat.storage import open_object_store, split_s3_uri

    bucket, key = split_s3_uri(spec)
    if key and not spec.endswith("/") and _is_fits_name(key):
        return [spec], None  # one object: its existence is checked when it is read
    store = open_object_store(f"s3://{bucket}", endpoint_url=endpoint_url)
    prefix = f"{key}/" if key else ""
    try:
        keys = [k for k in store.list(prefix) if _is_fits_name(k)]
    except HubcatError as exc:
        return [], f"cannot list {spec}: {exc}"
    if not keys:
        return (
            [],
            f"no FITS object under s3://{bucket}/{prefix} (looked for {', '.join(FITS_SUFFIXES)})",
        )
    return [f"s3://{bucket}/{k}" for k in keys], None


def _expand_local(spec: str) -> tuple[list[str], str | None]:
    text = spec[len("file://") :] if spec.startswith("file://") else spec
    path = Path(text).expanduser()
    if _GLOB_CHARS & set(text):
        found = sorted(p for p in glob.glob(str(path), recursive=True) if os.path.isfile(p))
        if not found:
            return [], f"no file matches the pattern {spec}"
        return [str(Path(p).absolute()) for p in found], None
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and _is_fits_name(p.name))
        if not found:
            return [], f"folder {path} holds no FITS file ({', '.join(FITS_SUFFIXES)})"
        return [str(p.absolute()) for p in found], None
    if not path.exists():
        return [], f"{path} does not exist; check the path"
    return [str(path.absolute())], None


def resolve_sources(
    specs: Iterable[str] = (),
    *,
    mast: Sequence[str] = (),
    suffix: str = "drz",
    endpoint_url: str | None = None,
) -> tuple[list[SourceSpec], list[Rejected]]:
    """Expand source specs into mosaic URIs, in order, without duplicates.

    Parameters
    ----------
    specs : iterable of str
        Paths, globs, folders, ``s3://`` URIs or prefixes, ``@listfile``.
    mast : sequence of str
        MAST dataset ids, read from ``s3://stpubdata`` (anonymously).
    suffix : str
        Product suffix of the MAST datasets (``drz``, ``drc``, ...).
    endpoint_url : str or None
        S3 endpoint for listing prefixes (None: ``AWS_ENDPOINT_URL`` or AWS).

    Returns
    -------
    sources : list of SourceSpec
    rejected : list of Rejected
        Specs that gave no source, each with the reason.

    Raises
    ------
    SourceSpecError
        For a malformed MAST id or suffix, or an unreadable list file (operator typos, reported
        before any work starts).
    """
    out: list[SourceSpec] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()

    def add(uris: list[str], given: str) -> None:
        for uri in uris:
            if uri not in seen:
                seen.add(uri)
                out.append(SourceSpec(uri, given))

    queue = [str(s) for s in specs]
    expanded: list[str] = []
    for spec in queue:
        if spec.startswith("@"):
            expanded.extend(_read_list_file(spec, endpoint_url))
        else:
            expanded.append(spec)
    for spec in expanded:
        if spec.startswith("s3://"):
            uris, reason = _expand_s3(spec, endpoint_url)
        else:
            uris, reason = _expand_local(spec)
        if reason:
            rejected.append(Rejected(spec, reason))
        add(uris, spec)
    for dataset in mast:
        add([mast_uri(dataset, suffix)], f"mast:{dataset}")
    return out, rejected
