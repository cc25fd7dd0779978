"""The summary of a run: a table for people, one JSON object for programs."""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field

__all__ = ["RunSummary", "SourceOutcome"]


@dataclass
class SourceOutcome:
    """What happened to one source in this run.

    Attributes
    ----------
    source : str
        URI (or what was typed, for a spec that resolved to nothing).
    status : str
        ``"done"`` (tiled by this run), ``"skipped"`` or ``"failed"``.
    reason : str
        Why it was skipped or failed.
    tiles : int
        Tiles it added (``done``) or holds from an earlier run (``skipped``).
    seconds : float
        Tiling time in this run.
    """

    source: str
    status: str
    reason: str = ""
    tiles: int = 0
    seconds: float = 0.0
    mosaic_id: str = ""


@dataclass
class RunSummary:
    """Outcome of :func:`pipeline.run_pipeline`.

    Attributes
    ----------
    catalogue : str
        URI of the catalogue.
    tile_store : str
        URI of the tile store.
    sources : list of SourceOutcome
        Every source, in plan order, with its status in this run.
    tiles : int
        Tiles in the tile store (all sources, all runs).
    tiles_added : int
        Tiles this run added.
    units : int
        Work units of the tile store.
    units_reused : int
        Units whose accepted vectors were already stored when the embedding stage started
        (not recomputed).
    units_computed : int
        Units embedded by this run.
    units_failed : int
        Units that did not get accepted vectors (their tiles are left out of the catalogue).
    stage_seconds : dict
        Wall time per stage (``tiling``, ``embedding``, ``catalogue``), seconds.
    merkle_root : str or None
        Hex root of the catalogue's provenance tree (None when no catalogue was written).
    catalogue_version : int or None
    catalogue_tiles : int
    model : str
    model_digest : str
    weights_sha256 : str
    dashboard : str or None
        Dashboard link of the grid scheduler that ran the embedding stage; None for a local
        cluster, which shuts down with the stage (its link is shown only while it runs).
    attempt : int
        Number of this invocation in the catalogue's run record (1 for the first).
    """

    catalogue: str
    tile_store: str
    sources: list[SourceOutcome] = field(default_factory=list)
    tiles: int = 0
    tiles_added: int = 0
    units: int = 0
    units_reused: int = 0
    units_computed: int = 0
    units_failed: int = 0
    unit_failures: list[dict] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    merkle_root: str | None = None
    catalogue_version: int | None = None
    catalogue_tiles: int = 0
    model: str = ""
    model_digest: str = ""
    weights_sha256: str = ""
    dashboard: str | None = None
    attempt: int = 1

    # -- counts ---------------------------------------------------------------------------------
    def _with(self, status: str) -> list[SourceOutcome]:
        return [s for s in self.sources if s.status == status]

    @property
    def done(self) -> list[SourceOutcome]:
        """Sources tiled by this run."""
        return self._with("done")

    @property
    def skipped(self) -> list[SourceOutcome]:
        """Sources not tiled by this run, with the reason (e.g. tiled by an earlier run)."""
        return self._with("skipped")

    @property
    def failed(self) -> list[SourceOutcome]:
        """Sources that could not be tiled, with the reason."""
        return self._with("failed")

    @property
    def ok(self) -> bool:
        """Whether a catalogue exists and nothing failed in this run."""
        return self.merkle_root is not None and not self.failed and not self.units_failed

    # -- output ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-ready dict (counts, lists with reasons, times, ``merkle_root`` hex).

        Returns
        -------
        dict
            Every field, plus ``counts`` (sources, done, skipped, failed) and ``ok``.
        """
        d = asdict(self)
        d["counts"] = {
            "sources": len(self.sources),
            "done": len(self.done),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
        }
        d["ok"] = self.ok
        return d

    def to_json(self) -> str:
        """One JSON object on one line.

        Returns
        -------
        str
            :meth:`to_dict` as JSON with sorted keys.
        """
        return json.dumps(self.to_dict(), sort_keys=True)

    def render(self, width: int = 110) -> str:
        """The summary as text tables (what ``hubcat run`` prints at the end).

        Parameters
        ----------
        width : int
            Width of the text, in characters.

        Returns
        -------
        str
            Plain text (no colour codes): a table of sources, a table of totals, then one line
            per failed unit; no trailing newline.
        """
        from rich.console import Console

        buf = io.StringIO()
        console = Console(file=buf, width=width, force_terminal=False, color_system=None)
        if self.sources:
            console.print(self._sources_table())
        totals = self._totals_table()
        console.print(totals)
        if self.unit_failures:
            console.print("failed units:")
            for f in self.unit_failures:
                console.print(f"  {f.get('unit_key')}: {f.get('reason')}")
        return buf.getvalue().rstrip("\n")

    def _sources_table(self):
        from rich.table import Table

        table = Table(title="hubcat run: sources", title_justify="left", expand=False)
        table.add_column("status")
        table.add_column("source", overflow="fold")
        table.add_column("tiles", justify="right")
        table.add_column("s", justify="right")
        table.add_column("reason", overflow="fold")
        for s in self.sources:
            reason = s.reason.removeprefix(f"{s.source}: ")  # the source is in its own column
            table.add_row(s.status, s.source, str(s.tiles), f"{s.seconds:.1f}", reason)
        return table

    def _totals_table(self):
        from rich.table import Table

        totals = Table(title="summary", title_justify="left", show_header=False, expand=False)
        totals.add_column("what")
        totals.add_column("value", overflow="fold")
        totals.add_row(
            "sources",
            f"{len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed "
            f"(of {len(self.sources)})",
        )
        totals.add_row(
            "tiles", f"{self.tiles} in the tile store ({self.tiles_added} added by this run)"
        )
        units = (
            f"{self.units} total: {self.units_computed} computed by this run, "
            f"{self.units_reused} already done (not recomputed)"
        )
        if self.units_failed:
            units += f", {self.units_failed} failed"
        totals.add_row("units", units)
        times = ", ".join(f"{k} {v:.1f} s" for k, v in self.stage_seconds.items())
        totals.add_row("time per stage", times or "-")
        totals.add_row("model", f"{self.model} (weights sha256 {self.weights_sha256[:16]}...)")
        version = f" version {self.catalogue_version}" if self.catalogue_version else ""
        totals.add_row("catalogue", f"{self.catalogue}{version}, {self.catalogue_tiles} tiles")
        totals.add_row("tile store", self.tile_store)
        totals.add_row("Merkle root", self.merkle_root or "- (no catalogue written)")
        if self.dashboard:
            totals.add_row("dashboard", f"{self.dashboard} (the grid scheduler's)")
        return totals
