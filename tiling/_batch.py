"""Tile many sources: one bad file never stops the others."""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hubcat.errors import HubcatError, HubcatWarning
from hubcat.progress import Progress, reporter
from tiling._ingest import AddReport
from tiling._store import TileStore

__all__ = ["BatchReport", "SourceResult", "failure_reason", "tile_sources"]

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
        """A short human-readable summary: counts, then one line per failed source.

        Returns
        -------
        str
            A count line (sources tiled, tiles written, already present, failed), then indented
            warning, skipped-HDU and failure lines.
        """
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


def failure_reason(source: str, exc: BaseException) -> str:
    """One line saying why ``source`` could not be tiled (hubcat errors already name the file)."""
    text = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, HubcatError):
        text = f"{source}: {type(exc).__name__}: {text}"
    return " ".join(text.split())


@dataclass(frozen=True)
class SourceResult:
    """What happened to one source of :func:`tile_sources`, as soon as it is known."""

    source: str
    #: The report of a source that was tiled (or already present), else None.
    report: AddReport | None
    #: Why the source failed ("" when it did not).
    reason: str = ""
    #: The exception's class name when it failed.
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.report is not None


def tile_sources(
    store: TileStore,
    sources: Iterable[str | os.PathLike[str]],
    *,
    progress: Progress | None = None,
    on_source: Callable[[SourceResult], None] | None = None,
) -> BatchReport:
    """Add every source to ``store``; record, never raise, the reason a source fails.

    This is the one batch-tiling loop: ``hubcat tile`` and ``hubcat run`` both use it.

    Parameters
    ----------
    store : TileStore
    sources : iterable of str or path-like
        Local paths or ``s3://`` URIs.
    progress : callable, optional
        Called as ``progress("mosaics", done, total, name)`` after each source
        (see :mod:`hubcat.progress`).
    on_source : callable, optional
        Called with a :class:`SourceResult` after each source (to record it at once, so an
        interrupted batch keeps what it finished).

    Returns
    -------
    BatchReport
        ``failed`` maps each failed source to a one-line reason naming the file. Warnings
        (NaN pixels inside a footprint, ...) are kept in each :class:`AddReport`.
    """
    sources = [str(s) for s in sources]
    report_progress = reporter(progress)
    report = BatchReport()
    report_progress("mosaics", 0, len(sources), "")
    for done, source in enumerate(sources, start=1):
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", HubcatWarning)
                added = store.add_mosaic(source)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one bad source never stops the batch
            if not isinstance(exc, HubcatError):
                log.exception("unexpected error while tiling %s", source)
            reason = failure_reason(source, exc)
            report.failed[source] = reason
            result = SourceResult(
                source, None, reason, type(exc).__name__, time.perf_counter() - t0
            )
        else:
            report.added.append(added)
            result = SourceResult(source, added, seconds=time.perf_counter() - t0)
        if on_source is not None:
            on_source(result)
        report_progress("mosaics", done, len(sources), source.rsplit("/", 1)[-1])
    return report
