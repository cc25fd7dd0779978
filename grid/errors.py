"""Exceptions raised by :mod:`grid`.

Each error derives from :class:`hubcat.errors.HubcatError` and from the builtin it refines.
"""

from __future__ import annotations

from hubcat.errors import HubcatError

__all__ = [
    "AdmissionError",
    "EnrollmentError",
    "GridConfigError",
    "GridError",
    "InvalidResultError",
    "ModelVerificationError",
    "RemoteTaskError",
    "TrainingError",
]


class GridError(HubcatError, RuntimeError):
    """A grid run, scheduler or worker cannot proceed."""


class GridConfigError(GridError, ValueError):
    """A :class:`grid.GridConfig` value is out of range."""


class EnrollmentError(GridError, ValueError):
    """The certificate authority, an enrolment or a certificate is not usable."""


class AdmissionError(GridError, PermissionError):
    """The scheduler gate refused a peer (no/foreign/expired certificate, wrong name or role)."""


class InvalidResultError(GridError, ValueError):
    """A replica's result failed validation (hash, shape, dtype, finiteness or norm).

    Parameters
    ----------
    reason : str
        Short machine-readable reason (see :attr:`reason`).
    message : str
        The human-readable message, naming the replica and unit.

    Attributes
    ----------
    reason : str
        Short machine-readable reason (``"hash"``, ``"shape"``, ``"dtype"``, ``"nan"``,
        ``"norm"``, ``"missing"``, ``"receipt"``).
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class ModelVerificationError(GridError, ValueError):
    """The model a worker loaded does not have the weights sha256 the operator asked for."""


class RemoteTaskError(GridError):
    """A task failed on a worker; only the worker's text description is kept (never unpickled)."""


class TrainingError(GridError, ValueError):
    """A training run cannot start or go on (too few tiles, a budget below one round, ...)."""
