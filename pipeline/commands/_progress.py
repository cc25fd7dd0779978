"""Progress bars of the commands (on stderr): the library reports through callbacks, the
command draws."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

__all__ = ["progress_bar"]


@contextlib.contextmanager
def progress_bar(
    label: str, total: int | None, *, enabled: bool = True
) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr; yields ``update(done=None, total=None, note="")``.

    ``done`` is the number of steps finished so far (None: one more); a ``total`` of None
    shows a bar without an end (a stage whose size is not known in advance). When not
    ``enabled`` the callback does nothing.
    """
    if not enabled:
        yield lambda done=None, total=None, note="": None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        SpinnerColumn(),
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=total, note="")

        def update(done: int | None = None, total: int | None = None, note: str = "") -> None:
            fields: dict = {"note": note}
            if total is not None:
                fields["total"] = total
            if done is None:
                bar.update(task, advance=1, **fields)
            else:
                bar.update(task, completed=done, **fields)

        yield update


class StageBars:
    """Draws the stages a run reports (``pipeline.run.ProgressCallback``): one bar per stage.

    Use as a context manager; the instance is the callback::

        with StageBars() as bars:
            run_pipeline(..., progress=bars)
    """

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
            console=Console(stderr=True),
        )
        self._tasks: dict[str, object] = {}

    def __enter__(self) -> StageBars:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def __call__(self, stage: str, done: int, total: int | None, note: str = "") -> None:
        if stage == "message":
            self._bar.console.print(note, highlight=False, markup=False)
            return
        if stage not in self._tasks:
            self._tasks[stage] = self._bar.add_task(stage, total=total, note="")
        self._bar.update(self._tasks[stage], completed=done, total=total, note=note[-50:])
