"""Exceptions raised by :mod:`pipeline` (all derive from :class:`hubcat.errors.HubcatError`)."""

from __future__ import annotations

from hubcat.errors import HubcatError

__all__ = ["GridConnectionError", "RunError", "RunStateError", "SourceSpecError"]


class SourceSpecError(HubcatError, ValueError):
    """A source specification (MAST id, product suffix, list file) is malformed or unreadable."""


class RunStateError(HubcatError, ValueError):
    """A catalogue's run record does not match the requested run, or is unreadable."""


class RunError(HubcatError, RuntimeError):
    """A run could not complete a whole stage (not a single bad source, which is only reported)."""


class GridConnectionError(HubcatError, ValueError):
    """The operator cannot reach the grid scheduler (no TLS credentials, wrong address, down)."""
