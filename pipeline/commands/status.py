"""``hubcat status``: progress of the run(s) recorded in a catalogue."""

from __future__ import annotations

import argparse
import json

from pipeline.commands._options import add_json

__all__ = ["register", "run_status", "run_status_dict"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show the progress of a run: sources, tiles, units, catalogue version",
        description=(
            "Read the run record of CATALOGUE (CATALOGUE/run/) and the stores it names, and show "
            "how far the run got: sources done / failed / pending, tiles, units embedded, the "
            "last attempts and the catalogue's version and Merkle root."
        ),
    )
    parser.add_argument("catalogue", metavar="CATALOGUE", help="catalogue folder or s3:// prefix")
    parser.add_argument(
        "--endpoint-url", metavar="URL", help="S3 endpoint (default: AWS_ENDPOINT_URL)"
    )
    add_json(parser, "the status")
    parser.set_defaults(func=run_status)


def run_status_dict(catalogue: str, *, endpoint_url: str | None = None) -> dict:
    """The status of the run recorded at ``catalogue`` as a dict.

    Raises
    ------
    RunStateError
        If no run is recorded there.
    """
    from pipeline._stages import s3_endpoint
    from pipeline.errors import RunStateError
    from pipeline.run import open_run_state

    with s3_endpoint(endpoint_url):
        state = open_run_state(catalogue)
        plan = state.read_plan()
        if plan is None:
            msg = f"no run recorded at {state.root.uri}; start one with `hubcat run SOURCES --out {catalogue}`"
            raise RunStateError(msg)
        records = state.sources(plan)
        counts: dict[str, int] = {}
        for r in records:
            counts[r.status] = counts.get(r.status, 0) + 1
        out: dict = {
            "catalogue": state.catalogue.uri,
            "tile_store": plan.store,
            "model": plan.model,
            "tiling_digest": plan.tiling_digest,
            "sources": {"total": len(records), **counts},
            "failed": [
                {"source": r.uri, "reason": r.reason} for r in records if r.status == "failed"
            ],
            "pending": [r.uri for r in records if r.status == "pending"],
            "tiles": sum(r.tiles for r in records if r.status == "done"),
        }
        out.update(_units(plan, state))
        attempts = state.attempts()
        out["attempts"] = [
            {
                k: a.get(k)
                for k in ("attempt", "started", "finished", "units_computed", "units_reused")
            }
            for a in attempts
        ]
        out["interrupted"] = bool(attempts) and attempts[-1].get("finished") is None
        out.update(_catalogue(state))
        from pipeline.reprocess import model_versions

        out["model_versions"] = model_versions(catalogue)
    return out


def _units(plan, state) -> dict:
    """Units in the tile store and how many have accepted vectors (cheap listing, no model load)."""
    from hubcat.errors import HubcatError

    summary = state.read_summary() or {}
    digest = summary.get("model_digest")
    try:
        from tiling import TileStore

        store = TileStore.open(plan.store)
        units = store.units()
    except (HubcatError, OSError) as exc:
        return {"units": None, "units_done": None, "units_note": f"tile store not readable: {exc}"}
    if not digest:
        from embeddings import load_model

        digest = load_model(plan.model, plan.weights).digest
    from embeddings import EmbeddingStore

    done = set(EmbeddingStore(plan.store, digest).unit_keys())
    return {"units": len(units), "units_done": sum(u.unit_key in done for u in units)}


def _catalogue(state) -> dict:
    try:
        manifest = json.loads(state.catalogue.get("manifest.json"))
    except Exception:
        return {"catalogue_version": None, "merkle_root": None}
    prov = manifest.get("provenance") or {}
    return {
        "catalogue_version": manifest.get("version"),
        "catalogue_tiles": manifest.get("counts", {}).get("tiles"),
        "catalogue_model": manifest.get("model", {}).get("name"),
        "merkle_root": prov.get("root") if isinstance(prov, dict) else None,
    }


def run_status(args: argparse.Namespace) -> int:
    status = run_status_dict(args.catalogue, endpoint_url=args.endpoint_url)
    if args.json:
        print(json.dumps(status, sort_keys=True))
        return 0
    s = status["sources"]
    print(f"catalogue   {status['catalogue']}")
    print(f"tile store  {status['tile_store']}")
    print(f"model       {status['model']}")
    print(
        f"sources     {s['total']} planned: {s.get('done', 0)} done, {s.get('failed', 0)} failed, "
        f"{s.get('pending', 0)} pending"
    )
    print(f"tiles       {status['tiles']}")
    if status.get("units") is not None:
        print(f"units       {status['units_done']} of {status['units']} embedded")
    else:
        print(f"units       - ({status.get('units_note', '')})")
    for a in status["attempts"]:
        end = a["finished"] or "did not finish (killed or still running)"
        print(f"attempt {a['attempt']:<3} {a['started']} -> {end}")
    if status["catalogue_version"]:
        print(
            f"catalogue   version {status['catalogue_version']}, {status.get('catalogue_tiles')} tiles, "
            f"model {status.get('catalogue_model')}"
        )
        print(f"Merkle root {status['merkle_root']}")
    else:
        print("catalogue   not written yet")
    for v in status["model_versions"]:
        print(
            f"model v{v['version']:<3}  {v['model']} ({(v['model_digest'] or '')[:12]}) at {v['catalogue']}"
        )
    for f in status["failed"]:
        print(f"failed      {f['reason']}")
    if status["interrupted"]:
        print("The last run did not finish: re-run the same `hubcat run` command to resume.")
    return 0
