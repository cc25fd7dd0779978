"""Exceptions raised by :mod:`pipeline.serve`.

Every error derives from :class:`ServeError` (itself a :class:`hubcat.errors.HubcatError`) and
carries the HTTP status the service answers with, so one handler turns any of them into a 4xx
response whose body says what was wrong and what to do.
"""

from __future__ import annotations

from hubcat.errors import HubcatError

__all__ = [
    "BadRequestError",
    "ForbiddenError",
    "KeyFileError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "ServeError",
    "UnauthorizedError",
    "UsageLedgerError",
]


class ServeError(HubcatError):
    """Base class of the service's errors; ``status`` is the HTTP status it maps to."""

    status: int = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class BadRequestError(ServeError, ValueError):
    """A request parameter or an upload that cannot be used (400)."""

    status = 400


class NotFoundError(ServeError, KeyError):
    """An unknown tile or route (404)."""

    status = 404

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class PayloadTooLargeError(BadRequestError):
    """An upload larger than the service accepts (413)."""

    status = 413


class UnauthorizedError(ServeError, PermissionError):
    """No API key, or one the service does not know (401)."""

    status = 401


class ForbiddenError(ServeError, PermissionError):
    """A valid API key without the scope the route needs (403)."""

    status = 403


class RateLimitedError(ServeError):
    """A key over its rate limit or daily quota (429); ``retry_after`` in whole seconds."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class KeyFileError(ServeError, ValueError):
    """The API key file is unreadable, malformed, or names an unknown key or scope."""


class UsageLedgerError(ServeError, ValueError):
    """The usage ledger is unreadable, or an entry's chain or signature does not verify."""
