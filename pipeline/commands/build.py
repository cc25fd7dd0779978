"""``hubcat build``: merge a tile store's accepted embeddings into a catalogue (or a new version)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from pipeline.commands._options import add_json, add_progress, add_signing_key
from pipeline.commands._progress import progress_bar

__all__ = ["register", "run_build"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build",
        help="build a catalogue from a tile store's embeddings, add a version, or repair its index",
        description=(
            "Merge the accepted embeddings and tile metadata of STORE into the catalogue at OUT "
            "(a folder or s3:// prefix): FAISS index, parquet metadata, manifest and Merkle-rooted "
            "provenance. If OUT already holds a catalogue, the tiles it lacks are appended as a new "
            "version (the old version stays readable). --rebuild-index rebuilds a missing or "
            "corrupt index from the stored vectors; --merge combines partial catalogues."
        ),
    )
    parser.add_argument("--store", metavar="PATH", help="tile store (folder or s3:// prefix)")
    parser.add_argument(
        "--out", metavar="CATALOGUE", required=True, help="catalogue folder or s3:// prefix"
    )
    parser.add_argument(
        "--model-digest",
        metavar="HEX",
        help="which embeddings of STORE to use (a prefix is enough); needed when it holds several",
    )
    add_signing_key(parser)
    parser.add_argument(
        "--rebuild-index", action="store_true", help="rebuild OUT's index from its stored vectors"
    )
    parser.add_argument(
        "--merge", nargs="+", metavar="CATALOGUE", help="merge these partial catalogues into OUT"
    )
    parser.add_argument(
        "--exact-max",
        type=int,
        metavar="N",
        help="largest catalogue kept in an exact index (new catalogues only; default 200000)",
    )
    parser.add_argument(
        "--approximate",
        choices=("ivfflat", "hnsw", "ivfpq"),
        help="index kind above --exact-max (new catalogues only; default ivfflat)",
    )
    add_json(parser)
    add_progress(parser)
    parser.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from catalog import CatalogConfig, Catalogue
    from catalog.errors import CatalogError
    from embeddings import EmbeddingStore
    from pipeline._keys import operator_signing_key

    t0 = time.perf_counter()
    show = not (args.json or args.no_progress)
    if args.rebuild_index:
        with progress_bar("rebuilding index", None, enabled=show):
            cat = Catalogue.rebuild_index(args.out)
        note = (
            f"rebuilt the {cat.manifest['index']['type']} index of {cat.uri} (version {cat.version}, "
            f"{len(cat)} tiles) in {time.perf_counter() - t0:.1f} s"
        )
        return _report(args, cat, t0, "rebuild-index", note)
    overrides = {}
    if args.exact_max is not None:
        overrides["exact_max"] = args.exact_max
    if args.approximate is not None:
        overrides["approximate"] = args.approximate
    config = CatalogConfig(**overrides)
    if not args.merge and not args.store:
        msg = "give --store TILE_STORE (or --rebuild-index / --merge)"
        raise CatalogError(msg)
    signing_key = operator_signing_key(args.signing_key)
    if args.merge:
        with progress_bar("merging", None, enabled=show):
            cat = Catalogue.merge(args.out, args.merge, signing_key=signing_key, config=config)
        note = f"merged {len(args.merge)} catalogue(s) into {cat.uri}: {len(cat)} tiles"
        return _report(args, cat, t0, "merge", note)
    from tiling import TileStore

    tile_store = TileStore.open(args.store, read_only=True)
    embedding_store = EmbeddingStore.find(tile_store, args.model_digest)
    before = None
    try:
        before = Catalogue.open(args.out)
    except CatalogError:
        pass
    with progress_bar("building", None, enabled=show):
        cat = Catalogue.build(
            args.out, tile_store, embedding_store, signing_key=signing_key, config=config
        )
    store_ids = set(tile_store.metadata()["tile_id"])
    in_cat = set(cat.metadata()["tile_id"])
    skipped = {
        "already_in_catalogue": len(store_ids & set(before.metadata()["tile_id"]))
        if before is not None
        else 0,
        "not_embedded": len(store_ids - in_cat),
    }
    note = ""
    if before is not None and cat.version == before.version:
        note = f"{cat.uri} already holds every embedded tile of {tile_store.uri}: still version {before.version}"
    return _report(args, cat, t0, "build", note, skipped)


def _report(
    args: argparse.Namespace, cat, t0: float, action: str, note: str, skipped: dict | None = None
) -> int:
    """Print what was done: text, or one JSON object with ``--json``."""
    m = cat.manifest
    last = m["versions"][-1]
    summary = {
        "action": action,
        "catalogue": cat.uri,
        "version": cat.version,
        "versions": len(m["versions"]),
        "added": last.get("added"),
        "tiles": len(cat),
        "mosaics": m["counts"]["mosaics"],
        "zooms": m["counts"]["zooms"],
        "model": m["model"]["name"],
        "weights_sha256": m["weights_sha256"],
        "index": m["index"]["type"],
        "merkle_root": m["provenance"].get("root"),
        "tree_size": m["provenance"].get("tree_size"),
        "signed": bool(m["provenance"].get("signed")),
        "seconds": round(time.perf_counter() - t0, 3),
        "note": note,
        "skipped": skipped or {},
    }
    if args.json:
        json.dump(summary, sys.stdout, sort_keys=True)
        print()
        return 0
    if note:
        print(note)
    print(
        f"catalogue {cat.uri}\n"
        f"  version        {cat.version} (+{last['added']} tiles; {len(m['versions'])} version(s))\n"
        f"  tiles          {len(cat)} from {m['counts']['mosaics']} mosaic(s), zooms {m['counts']['zooms']}\n"
        f"  model          {m['model']['name']} (weights sha256 {m['weights_sha256'][:16]}...)\n"
        f"  index          {m['index']['type']} ({m['index']['faiss']}, inner product)\n"
        f"  merkle root    {summary['merkle_root']} (tree size {summary['tree_size']})\n"
        f"  time           {summary['seconds']:.1f} s"
    )
    if skipped:
        print(
            f"  skipped        {skipped['already_in_catalogue']} tile(s) already in the catalogue, "
            f"{skipped['not_embedded']} with no accepted embedding yet (embed them, then build again)"
        )
    return 0
