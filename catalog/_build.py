"""Building the catalogue: gathering inputs, writing versions, merging, rebuilding the index.

:class:`catalog.Catalogue`'s ``build``, ``merge`` and ``rebuild_index`` call the functions here;
each new version appends a segment (metadata and vectors), writes an index and the provenance log,
and writes its manifest last.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from catalog import _index
from catalog._compressed import KIND
from catalog._config import CatalogConfig
from catalog._encode import build_compressed_index
from catalog._inputs import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    Inputs,
    check_vectors,
    complete_columns,
    gather,
)
from catalog._manifest import (
    FORMAT,
    FORMAT_VERSION,
    check_compatible,
    dumps,
    now,
    read_manifest,
    sha256_hex,
    software_version,
    version_key,
)
from catalog._metashards import write_metadata_shards
from catalog._shards import write_vector_shards
from catalog._supersede import recomputed_rows
from catalog.errors import CatalogError, IncompatibleCatalogError
from hubcat.storage import ObjectStore, open_object_store

if TYPE_CHECKING:
    from catalog._catalogue import Catalogue

__all__ = [
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "build_catalogue",
    "build_from_vectors",
    "merge_catalogues",
    "rebuild_index",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- versions


def build_catalogue(
    cls: type[Catalogue],
    out_uri: str | Path | ObjectStore,
    tile_store,
    embedding_store,
    signing_key: object | None = None,
    *,
    config: CatalogConfig | None = None,
    client: object | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Catalogue:
    """:meth:`catalog.Catalogue.build` (parameters, returns and errors are documented there)."""
    store = out_uri if isinstance(out_uri, ObjectStore) else open_object_store(out_uri)
    inputs = gather(tile_store, embedding_store)
    return _add_version(
        cls,
        store,
        inputs,
        signing_key,
        config,
        tile_store=tile_store,
        client=client,
        progress=progress,
    )


def build_from_vectors(
    cls: type[Catalogue],
    out_uri: str | Path | ObjectStore,
    metadata: pd.DataFrame,
    vectors: np.ndarray,
    model: dict,
    signing_key: object | None = None,
    *,
    config: CatalogConfig | None = None,
    client: object | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Catalogue:
    """:meth:`catalog.Catalogue.from_vectors` (parameters, returns and errors are documented there)."""
    store = out_uri if isinstance(out_uri, ObjectStore) else open_object_store(out_uri)
    meta = metadata.reset_index(drop=True).copy()
    missing = [c for c in (*REQUIRED_COLUMNS, "tiling_digest") if c not in meta.columns]
    if missing:
        msg = f"metadata for {store.uri} has no column(s) {missing}; every row needs them"
        raise IncompatibleCatalogError(msg)
    defaults = {"tile_size": 224, "tile_store": ""}
    for name, value in defaults.items():
        if name not in meta.columns:
            meta[name] = value
    if "volunteers" not in meta.columns:
        meta["volunteers"] = [[] for _ in range(len(meta))]
    digests = sorted(meta["tiling_digest"].astype(str).unique())
    inputs = Inputs(
        meta,
        np.ascontiguousarray(vectors, dtype="<f4"),
        dict(model),
        digests[0] if digests else "",
        {d: {} for d in digests},
        str(meta["tile_store"].iloc[0]) if len(meta) else "",
    )
    return _add_version(
        cls, store, inputs, signing_key, config, tile_store=None, client=client, progress=progress
    )


def _add_version(
    cls: type[Catalogue],
    store: ObjectStore,
    inputs: Inputs,
    signing_key: object | None,
    config: CatalogConfig | None,
    *,
    tile_store: object | None,
    client: object | None,
    progress: Callable[[int, int], None] | None,
) -> Catalogue:
    """The new rows of ``inputs`` as a new version of ``store`` (or the unchanged catalogue)."""
    previous = None
    if store.exists("manifest.json"):
        previous = cls(store, read_manifest(store, None), _load_index=False)
        check_compatible(previous.manifest, inputs.model, f"tile store {inputs.tile_store_uri}")
        meta_prev = previous._metadata()
        new = ~inputs.meta["tile_id"].isin(meta_prev["tile_id"]).to_numpy()
        heirs = recomputed_rows(previous, inputs.meta, inputs.vectors)
        changed = heirs >= 0
        if not (new | changed).any():
            log.info(
                "catalogue %s already holds every tile of %s", store.uri, inputs.tile_store_uri
            )
            return cls(store, previous.manifest, tile_store=tile_store)
        take = new | changed
        meta, vectors = inputs.meta[take].reset_index(drop=True), inputs.vectors[take]
        if changed.any():
            meta["supersedes"] = heirs[take]
            log.info("%d recomputed tile(s) supersede their earlier rows", int(changed.sum()))
    else:
        meta, vectors = inputs.meta, inputs.vectors
    return _write_version(
        store,
        meta,
        vectors,
        inputs.model,
        previous,
        config or CatalogConfig(),
        signing_key,
        tile_store=tile_store,
        tiling=inputs.tiling,
        note=f"added {len(meta)} tile(s) from {inputs.tile_store_uri}"
        + (
            f" ({int((meta['supersedes'] >= 0).sum())} superseding recomputed rows)"
            if "supersedes" in meta.columns
            else ""
        ),
        client=client,
        progress=progress,
    )


def merge_catalogues(
    cls: type[Catalogue],
    out_uri: str | Path | ObjectStore,
    catalogues: Sequence[Catalogue | str | Path],
    signing_key: object | None = None,
    *,
    config: CatalogConfig | None = None,
) -> Catalogue:
    """Merge catalogues built from disjoint sets of mosaics into a new one at ``out_uri``.

    Rows keep the order of ``catalogues`` (all rows of the first, then of the second, ...);
    a tile present in several inputs with the same embedding is kept once; the same
    ``tile_id`` with different embeddings is an error.

    Raises
    ------
    IncompatibleCatalogError
        Inputs embedded with different models / preprocessing, or conflicting duplicates.
    CatalogError
        ``out_uri`` already holds a catalogue (merge into a new location).
    """
    cats = [c if isinstance(c, cls) else cls.open(c) for c in catalogues]
    if not cats:
        msg = "merge needs at least one catalogue"
        raise CatalogError(msg)
    store = out_uri if isinstance(out_uri, ObjectStore) else open_object_store(out_uri)
    if store.exists("manifest.json"):
        msg = f"{store.uri} already holds a catalogue; merge into a new location"
        raise CatalogError(msg)
    model = cats[0].manifest["model"]
    for c in cats[1:]:
        check_compatible(cats[0].manifest, c.manifest["model"], f"catalogue {c.uri}")
    metas, vecs, seen = [], [], {}
    for c in cats:
        meta = c.metadata()
        vec = c.vectors()
        keep = np.ones(len(meta), dtype=bool)
        for i, (tid, esha) in enumerate(
            zip(meta["tile_id"], meta["embedding_sha256"], strict=True)
        ):
            if tid in seen:
                if seen[tid] != esha:
                    msg = (
                        f"tile {tid!r} is in several catalogues with different embeddings "
                        f"(one is {c.uri}); they were not built from disjoint mosaics"
                    )
                    raise IncompatibleCatalogError(msg)
                keep[i] = False
            else:
                seen[tid] = esha
        metas.append(meta[keep])
        vecs.append(vec[keep])
    meta = pd.concat(metas, ignore_index=True)
    vectors = np.concatenate(vecs)
    return _write_version(
        store,
        meta,
        vectors,
        model,
        None,
        config or cats[0].config,
        signing_key,
        tiling={d: t for c in cats for d, t in (c.manifest.get("tiling") or {}).items()},
        note="merged " + ", ".join(c.uri for c in cats),
        keep_columns=True,
    )


def rebuild_index(
    cls: type[Catalogue], uri: str | Path | ObjectStore, *, version: int | None = None
) -> Catalogue:
    """Rebuild a missing or corrupt index from the stored (sha256-checked) vectors.

    The manifest of that version is rewritten with the new index's sha256; rows, vectors and
    provenance are unchanged.
    """
    store = uri if isinstance(uri, ObjectStore) else open_object_store(uri)
    manifest = read_manifest(store, version)
    cat = cls(store, manifest, _load_index=False)
    kind = manifest["index"]["type"]
    manifest = dict(manifest)
    if kind == KIND:
        manifest["index"], _ = build_compressed_index(
            store, manifest, None, cat.config, cat.version
        )
    else:
        index = _index.build_index(cat._unit_vectors(), cat.config, kind)
        manifest["index"] = _write_index(store, index, cat.config, cat.version)
    manifest["index"]["rebuilt"] = now()
    store.put(version_key(cat.version), dumps(manifest))
    latest = read_manifest(store, None)
    if int(latest["version"]) == cat.version:
        store.put("manifest.json", dumps(manifest))
    return cls(store, manifest)


# --------------------------------------------------------------------------- writing


def _write_index(store: ObjectStore, index, config: CatalogConfig, version: int) -> dict:
    data = _index.serialize_index(index)
    key = f"versions/{version:06d}/index.faiss"
    store.put(key, data)
    entry = _index.describe_index(index, config)
    entry.update({"key": key, "sha256": sha256_hex(data), "bytes": len(data)})
    return entry


def _write_version(
    store: ObjectStore,
    meta: pd.DataFrame,
    vectors: np.ndarray,
    model: dict,
    previous: Catalogue | None,
    config: CatalogConfig,
    signing_key: object | None,
    *,
    tile_store: object | None = None,
    tiling: dict | None = None,
    note: str = "",
    keep_columns: bool = False,
    client: object | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Catalogue:
    """Append ``meta``/``vectors`` as a new version of ``store`` (the first when no previous)."""
    from catalog._catalogue import Catalogue
    from catalog.provenance import build_provenance

    where = f"catalogue {store.uri}"
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    check_vectors(vectors, where)
    if vectors.shape[0] != len(meta):
        msg = f"{where}: {len(meta)} metadata rows but {vectors.shape[0]} vectors"
        raise CatalogError(msg)
    if vectors.shape[1] != int(model["dim"]):
        msg = f"{where}: vectors have dimension {vectors.shape[1]}, the model {model['dim']}"
        raise CatalogError(msg)
    if meta["tile_id"].duplicated().any():
        dup = meta["tile_id"][meta["tile_id"].duplicated()].iloc[0]
        msg = f"{where}: tile_id {dup!r} appears twice in the input; the tile store is inconsistent"
        raise CatalogError(msg)
    if previous is not None:
        config = previous.config
    version = 1 if previous is None else previous.version + 1
    start = 0 if previous is None else len(previous)
    created = now()

    meta = complete_columns(meta.reset_index(drop=True))
    meta["embedding_sha256"] = [hashlib.sha256(v.tobytes()).hexdigest() for v in vectors]
    if not keep_columns or "software_version" not in meta.columns:
        meta["software_version"] = software_version()
    if not keep_columns or "catalogue_version" not in meta.columns:
        meta["catalogue_version"] = version
    meta["leaf_index"] = np.arange(start, start + len(meta), dtype=np.int64)
    if previous is not None:
        prev_cols = list(previous._metadata().columns)
        for c in prev_cols:
            if c not in meta.columns:
                meta[c] = OPTIONAL_COLUMNS.get(c, "")
        meta = meta[prev_cols + [c for c in meta.columns if c not in prev_cols]]

    seg_key = f"segments/{version:06d}"
    shards = write_vector_shards(store, seg_key, vectors, config.shard_rows, start)
    segment = {
        "version": version,
        "rows": len(meta),
        "first_row": start,
        **write_metadata_shards(
            store, seg_key, meta, config.metadata_shard_rows, config.row_group_rows
        ),
    }
    if len(shards) == 1:  # the layout of every catalogue written before shards
        segment["vectors_key"] = shards[0]["key"]
        segment["vectors_sha256"] = shards[0]["sha256"]
    else:
        segment["vector_shards"] = shards
    segments = ([] if previous is None else list(previous.manifest["segments"])) + [segment]

    # the full catalogue of this version, for the index and the provenance
    manifest: dict = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "software_version": software_version(),
        "version": version,
        "created": created,
        "model": dict(model),
        "weights_sha256": model["weights_sha256"],
        "preprocessing_digest": model["digest"],
        "config": config.to_dict(),
        "config_digest": config.digest,
        "segments": segments,
        "counts": {"tiles": start + len(meta)},
        "index": {},
    }
    cat = Catalogue(store, manifest, tile_store=tile_store, _load_index=False)
    full = cat._metadata()
    manifest["tiling_digests"] = sorted(full["tiling_digest"].astype(str).unique())
    manifest["tiling_digest"] = (
        manifest["tiling_digests"][0] if len(manifest["tiling_digests"]) == 1 else None
    )
    known = {} if previous is None else dict(previous.manifest.get("tiling") or {})
    known.update(tiling or {})
    manifest["tiling"] = {d: known.get(d, {}) for d in manifest["tiling_digests"]}
    manifest["tile_stores"] = list(dict.fromkeys(full["tile_store"].astype(str)))
    manifest["tile_store"] = manifest["tile_stores"][0]
    manifest["counts"] = {
        "tiles": len(full),
        "mosaics": int(full["mosaic_id"].nunique()),
        "sources": int(full["source_sha256"].nunique()),
        "zooms": {str(z): int(n) for z, n in full["zoom"].value_counts().sort_index().items()},
        "dim": int(model["dim"]),
    }

    # the index: extend the previous one when it has the right kind, else build afresh
    kind = config.index_kind(len(full))
    if kind == KIND:
        prev_entry = None if previous is None else previous.manifest["index"]
        manifest["index"], _ = build_compressed_index(
            store, manifest, prev_entry, config, version, client=client, progress=progress
        )
    elif previous is not None and previous.manifest["index"]["type"] == kind:
        index = previous._read_index()
        index.add(_index.normalise(vectors, what=where))
        how = "extended"
    else:
        index = _index.build_index(cat._unit_vectors(), config, kind)
        how = "built"
    if kind != KIND:
        manifest["index"] = _write_index(store, index, config, version)
        manifest["index"]["how"] = how

    previous_prov = None if previous is None else previous.manifest.get("provenance")
    manifest["provenance"] = build_provenance(
        cat.iter_records(),
        store,
        signing_key=signing_key,
        previous=previous_prov,
        shard_leaves=config.leaf_shard_rows,
    )
    root = manifest["provenance"].get("root") if isinstance(manifest["provenance"], dict) else None
    history = [] if previous is None else list(previous.manifest["versions"])
    history.append(
        {
            "version": version,
            "created": created,
            "tiles": len(full),
            "added": len(meta),
            "index": kind,
            "merkle_root": root,
            "note": note,
            "manifest": version_key(version),
        }
    )
    manifest["versions"] = history
    store.put(version_key(version), dumps(manifest))
    store.put("manifest.json", dumps(manifest))
    log.info("catalogue %s version %d: %d tiles (%s)", store.uri, version, len(full), note)
    return Catalogue(store, manifest, tile_store=tile_store)


# --------------------------------------------------------------------------- small helpers
