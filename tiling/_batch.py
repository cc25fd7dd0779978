"""Tile many sources: one bad file never stops the others."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

from hubcat.errors import HubcatError, HubcatWarning
from tiling._store import AddReport, TileStore

__all__ = ["BatchReport", "tile_sources"]

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """Outcome of :func:`tile_sources`: what was added, already present, or failed and why."""

    added: list[AddReport] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every source was tiled (or already present)."""
        return not self.failed

    @property
    def tiles_written(self) -> int:
        return sum(r.tiles_written for r in self.added)

    def summary(self) -> str:
        """A short human-readable summary: counts, then one line per failed source."""
        new = sum(1 for r in self.added if not r.already_present)
        present = len(self.added) - new
        lines = [
            f"{len(self.added) + len(self.failed)} source(s): {new} tiled ({self.tiles_written} "
            f"tiles), {present} already present, {len(self.failed)} failed"
        ]
        for report in self.added:
            lines.extend(f"  warning: {w}" for w in report.warnings)
            lines.extend(
                f"  {report.source}: HDU {h} skipped: {r}" for h, r in report.skipped_hdus.items()
            )
        lines.extend(f"  failed: {reason}" for reason in self.failed.values())
        return "\n".join(lines)


def tile_sources(
    store: TileStore, sources: Iterable[str | os.PathLike[str]], *, progress: bool = False
) -> BatchReport:
    """Add every source to ``store``; record, never raise, the reason a source fails.

    Parameters
    ----------
    store : TileStore
    sources : iterable of str or path-like
        Local paths or ``s3://`` URIs.
    progress : bool
        Show a rich progress bar over sources.

    Returns
    -------
    BatchReport
        ``failed`` maps each failed source to a one-line reason naming the file. Warnings
        (NaN pixels inside a footprint, ...) are kept in each :class:`AddReport`.
    """
    sources = [str(s) for s in sources]
    report = BatchReport()
    bar = task = None
    if progress:
        from rich.progress import Progress

        bar = Progress()
        bar.start()
        task = bar.add_task("mosaics", total=len(sources))
    try:
        for source in sources:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", HubcatWarning)
                    report.added.append(store.add_mosaic(source))
            except HubcatError as exc:
                report.failed[source] = str(exc)
            except Exception as exc:  # unexpected, but it concerns this one file only
                log.exception("unexpected error while tiling %s", source)
                report.failed[source] = f"{source}: {type(exc).__name__}: {exc}"
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    return report
