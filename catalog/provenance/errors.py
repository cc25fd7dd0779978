"""Exceptions raised while building, reading or verifying a catalogue's provenance."""

from __future__ import annotations

from collections.abc import Sequence

from hubcat.errors import HubcatError

__all__ = [
    "CheckpointError",
    "ProofError",
    "ProvenanceError",
    "ProvenanceNotFoundError",
    "SignatureError",
    "SigningKeyError",
    "VerificationError",
]


class ProvenanceError(HubcatError, ValueError):
    """Provenance (Merkle log, leaves, checkpoint, keys) cannot be built or read as asked."""


class ProofError(ProvenanceError):
    """A proof, hash or index is malformed: not bytes or hex, not 32 bytes, negative, ..."""


class VerificationError(ProvenanceError):
    """Something does not verify: a proof, a signature, a re-hashed tile or embedding.

    Parameters
    ----------
    message : str
        The summary message.
    failures : sequence of str
        One line per failed check (kept as :attr:`failures`).

    Attributes
    ----------
    failures : list of str
        One line per failed check, each naming the tile, file or value at fault.
    """

    def __init__(self, message: str, failures: Sequence[str] = ()) -> None:
        self.failures = list(failures)
        super().__init__(message)


class ProvenanceNotFoundError(ProvenanceError, FileNotFoundError):
    """A provenance file (leaves, checkpoint, public key) is missing from the catalogue."""


class CheckpointError(ProvenanceError):
    """A checkpoint or signed note is malformed."""


class SignatureError(VerificationError):
    """A checkpoint carries no valid signature by the expected key."""


class SigningKeyError(ProvenanceError):
    """A key file is missing, malformed, or not an Ed25519 key."""
