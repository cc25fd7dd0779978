"""The progress-callback protocol: library code reports, only the command line draws.

Long work (tiling a mosaic, running work units, building an index, verifying a catalogue) takes
an optional ``progress`` callable and calls it as ``progress(stage, done, total, note)``:

``stage`` : str
    What is being done (``"tiling"``, ``"units"``, ``"index"``, ...). The stage ``"message"``
    carries a line of text in ``note`` (a dashboard link, a summary) for the caller to show.
``done`` : int
    Steps finished so far in this stage.
``total`` : int or None
    Steps in the stage, or None when not known in advance.
``note`` : str
    A short free-text remark (the current file, a count of failures).

Library code never prints and never draws a bar: it calls :func:`reporter` ``(progress)`` once
and reports through what it returns. ``pipeline`` turns the calls into rich progress bars.

Examples
--------
>>> seen = []
>>> report = reporter(lambda *event: seen.append(event))
>>> report("tiling", 1, 4, "j8bt06010_drz.fits")
>>> seen
[('tiling', 1, 4, 'j8bt06010_drz.fits')]
>>> reporter(None)("tiling", 2, 4)  # no callback: nothing happens
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["MESSAGE", "Progress", "ProgressCallback", "no_progress", "reporter"]

#: The stage whose ``note`` is a line of text to show rather than a step count.
MESSAGE = "message"


class Progress(Protocol):
    """What a ``progress`` argument is called with (see the module docstring)."""

    def __call__(self, stage: str, done: int, total: int | None, note: str = "") -> None:
        """Report one step of long work.

        Parameters
        ----------
        stage : str
            What is being done (``"tiling"``, ``"units"``, ...), or :data:`MESSAGE`.
        done : int
            Steps finished so far in this stage.
        total : int or None
            Steps in the stage, or None when not known in advance.
        note : str
            A short remark; for :data:`MESSAGE`, the line of text to show.
        """


#: A callable ``progress(stage, done, total, note)``.
ProgressCallback = Callable[[str, int, "int | None", str], None]


def no_progress(stage: str, done: int, total: int | None, note: str = "") -> None:
    """A progress callback that ignores every call.

    Parameters
    ----------
    stage : str
        Ignored.
    done : int
        Ignored.
    total : int or None
        Ignored.
    note : str
        Ignored.
    """


def reporter(progress: Progress | None) -> Progress:
    """The callback to report through: ``progress`` itself, or :func:`no_progress` for None.

    Parameters
    ----------
    progress : callable or None
        A callback ``progress(stage, done, total, note)``, or None for no reporting.

    Returns
    -------
    callable
        A callback accepting ``(stage, done, total, note="")``.

    Raises
    ------
    TypeError
        If ``progress`` is neither None nor callable (for example ``True``: library code does
        not draw bars; pass a callback, such as one from ``pipeline``).
    """
    if progress is None or progress is False:
        return no_progress
    if not callable(progress):
        msg = (
            f"progress must be a callable progress(stage, done, total, note) or None, got "
            f"{progress!r}; the command line draws bars, library code only reports"
        )
        raise TypeError(msg)

    def report(stage: str, done: int, total: int | None, note: str = "") -> None:
        progress(stage, done, total, note)

    return report
