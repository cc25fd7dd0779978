"""Reading Ed25519 keys from PEM: the one reader behind the catalogue's signing key and the
grid's ledger key.

Each caller turns :class:`~hubcat.errors.KeyFileError` into its own package's error, so a message
still names the key by its role ("signing key ...", "ledger key ...").
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hubcat.errors import KeyFileError

__all__ = ["read_ed25519_private_pem", "read_ed25519_public_pem"]


def read_ed25519_private_pem(data: bytes, source: str) -> Ed25519PrivateKey:
    """Parse an unencrypted PEM (PKCS#8) Ed25519 private key.

    Parameters
    ----------
    data : bytes
        The PEM text.
    source : str
        What the key is, for messages (``"ledger key /path"``).

    Returns
    -------
    Ed25519PrivateKey

    Raises
    ------
    KeyFileError
        If ``data`` is not a readable unencrypted PEM private key, or not an Ed25519 one.
    """
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        msg = f"{source} is not a readable unencrypted PEM private key: {exc}"
        raise KeyFileError(msg) from None
    if not isinstance(key, Ed25519PrivateKey):
        msg = f"{source} is a {type(key).__name__}; hubcat signs with Ed25519 keys only"
        raise KeyFileError(msg)
    return key


def read_ed25519_public_pem(data: bytes, source: str) -> Ed25519PublicKey:
    """Parse a PEM (SubjectPublicKeyInfo) Ed25519 public key.

    Parameters
    ----------
    data : bytes
        The PEM text.
    source : str
        What the key is, for messages.

    Returns
    -------
    Ed25519PublicKey

    Raises
    ------
    KeyFileError
        If ``data`` is not a readable PEM public key, or not an Ed25519 one.
    """
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        msg = f"{source} is not a readable PEM public key: {exc}"
        raise KeyFileError(msg) from None
    if not isinstance(key, Ed25519PublicKey):
        msg = f"{source} is a {type(key).__name__}; hubcat verifies Ed25519 signatures only"
        raise KeyFileError(msg)
    return key
