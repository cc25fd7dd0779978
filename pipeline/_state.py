"""The record of a run, kept beside the catalogue so a killed run resumes where it stopped.

Layout under ``<catalogue>/run/`` (a local folder or an ``s3://`` prefix)::

    plan.json                  what the run does: sources (in order), tile store, model, tiling
                               parameters and their digest; sources are appended by later runs
    sources/<id>.json          one record per source: status (done / failed), reason, mosaic id,
                               tiles, sha256, attempts; written atomically after each source
    attempts/<n>.json          one record per invocation: start, end, stage times, counts
    summary.json               the summary of the last invocation that finished

Per-unit state is the embedding store's (a unit's vectors and record are written atomically by
the grid once accepted), so "finished work" is always what is durably stored, never what a
process believed before it was killed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from hubcat.errors import StoreNotFoundError
from hubcat.storage import ObjectStore
from pipeline.errors import RunStateError

__all__ = ["FORMAT", "RunPlan", "RunState", "SourceRecord"]

FORMAT = "hubcat-run/1"
RUN_PREFIX = "run"


def now() -> str:
    """UTC time, ISO 8601, seconds."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def source_id(uri: str) -> str:
    """Stable short id of a source URI (file name of its record)."""
    return hashlib.sha256(uri.encode("utf-8")).hexdigest()[:20]


def _dumps(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


@dataclass
class SourceRecord:
    """State of one source across runs.

    Attributes
    ----------
    uri : str
    status : str
        ``"pending"``, ``"done"`` or ``"failed"``.
    reason : str
        Why it failed (error type and message), empty otherwise.
    mosaic_id : str
    tiles : int
        Tiles it added to the tile store.
    source_sha256 : str
    attempts : int
        How many runs tried to tile it.
    seconds : float
        Tiling time of the last attempt.
    updated : str
        ISO time of the last change.
    """

    uri: str
    status: str = "pending"
    reason: str = ""
    error: str = ""
    mosaic_id: str = ""
    tiles: int = 0
    source_sha256: str = ""
    attempts: int = 0
    seconds: float = 0.0
    updated: str = ""


@dataclass
class RunPlan:
    """What a catalogue's runs do; parameters that change outputs must match between runs."""

    store: str
    model: str
    weights: str | None
    tiling: dict
    tiling_digest: str
    sources: list[str] = field(default_factory=list)
    created: str = ""
    format: str = FORMAT

    def fingerprint(self) -> dict:
        """The parameters that must not change while a catalogue is extended."""
        return {
            "store": self.store,
            "model": self.model,
            "weights": self.weights,
            "tiling_digest": self.tiling_digest,
        }


class RunState:
    """Read and write the run record of a catalogue (see the module docstring for the layout).

    Parameters
    ----------
    catalogue : ObjectStore
        The catalogue's root; the record lives under its ``run/`` prefix.
    """

    def __init__(self, catalogue: ObjectStore) -> None:
        self.catalogue = catalogue
        self.root = catalogue.child(RUN_PREFIX)

    # -- plan ---------------------------------------------------------------------------------
    def read_plan(self) -> RunPlan | None:
        """The recorded plan, or None when no run was recorded here."""
        try:
            data = json.loads(self.root.get("plan.json"))
        except StoreNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError) as exc:
            msg = f"{self.root.uri}/plan.json is not valid JSON ({exc}); move the folder aside"
            raise RunStateError(msg) from None
        if data.get("format") != FORMAT:
            msg = (
                f"{self.root.uri}/plan.json has format {data.get('format')!r}; expected {FORMAT!r}"
            )
            raise RunStateError(msg)
        known = set(RunPlan.__dataclass_fields__)
        return RunPlan(**{k: v for k, v in data.items() if k in known})

    def write_plan(self, plan: RunPlan) -> None:
        if not plan.created:
            plan.created = now()
        self.root.put("plan.json", _dumps(asdict(plan)))

    def reconcile(self, plan: RunPlan) -> tuple[RunPlan, list[str]]:
        """Merge ``plan`` into the recorded one; return it and the sources that are new.

        Raises
        ------
        RunStateError
            If the catalogue was made with another tile store, model, weights or tiling
            parameters (those would give a different catalogue, not a resumed one).
        """
        old = self.read_plan()
        if old is None:
            self.write_plan(plan)
            return plan, list(plan.sources)
        mine, theirs = plan.fingerprint(), old.fingerprint()
        diff = {k: (theirs[k], mine[k]) for k in mine if mine[k] != theirs[k]}
        if diff:
            what = "; ".join(f"{k}: recorded {a!r}, now {b!r}" for k, (a, b) in diff.items())
            msg = (
                f"catalogue {self.catalogue.uri} was made by a run with other parameters ({what}). "
                "Re-run with the recorded parameters to resume, use `hubcat reprocess` for another "
                "model, or choose a new --out"
            )
            raise RunStateError(msg)
        known = set(old.sources)
        new = [s for s in plan.sources if s not in known]
        if new:
            old.sources.extend(new)
            self.write_plan(old)
        return old, new

    # -- sources ------------------------------------------------------------------------------
    def _source_key(self, uri: str) -> str:
        return f"sources/{source_id(uri)}.json"

    def source(self, uri: str) -> SourceRecord:
        """The record of ``uri`` (a pending one when none was written)."""
        try:
            data = json.loads(self.root.get(self._source_key(uri)))
        except StoreNotFoundError:
            return SourceRecord(uri)
        except (ValueError, UnicodeDecodeError):
            return SourceRecord(uri)  # a torn record cannot exist (atomic put); be lenient
        known = set(SourceRecord.__dataclass_fields__)
        return SourceRecord(**{k: v for k, v in data.items() if k in known})

    def write_source(self, record: SourceRecord) -> None:
        record.updated = now()
        self.root.put(self._source_key(record.uri), _dumps(asdict(record)))

    def sources(self, plan: RunPlan | None = None) -> list[SourceRecord]:
        """Records of every planned source, in plan order."""
        plan = plan or self.read_plan()
        if plan is None:
            return []
        return [self.source(uri) for uri in plan.sources]

    # -- attempts and summary -----------------------------------------------------------------
    def next_attempt(self) -> int:
        numbers = [
            int(k.removeprefix("attempts/").removesuffix(".json"))
            for k in self.root.list("attempts/")
            if k.endswith(".json") and k.removeprefix("attempts/").removesuffix(".json").isdigit()
        ]
        return max(numbers, default=0) + 1

    def write_attempt(self, number: int, record: dict) -> None:
        self.root.put(f"attempts/{number:05d}.json", _dumps(record))

    def attempts(self) -> list[dict]:
        out = []
        for key in self.root.list("attempts/"):
            try:
                out.append(json.loads(self.root.get(key)))
            except (ValueError, StoreNotFoundError):
                continue
        return out

    def write_summary(self, summary: dict) -> None:
        self.root.put("summary.json", _dumps(summary))

    def read_summary(self) -> dict | None:
        try:
            return json.loads(self.root.get("summary.json"))
        except (StoreNotFoundError, ValueError):
            return None
