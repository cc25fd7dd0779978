"""The operator's signing key for catalogue checkpoints, as the CLI commands find it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

__all__ = ["operator_signing_key"]


def operator_signing_key(
    path: str | os.PathLike[str] | None = None,
    *,
    announce: Callable[[str], object] | None = None,
):
    """Return the operator's Ed25519 signing key.

    Parameters
    ----------
    path : str or path-like, optional
        Key file given by the operator (``--signing-key``). When omitted, the default key
        (``$HUBCAT_SIGNING_KEY`` or ``~/.hubcat/hubcat.key``) is used, and made on first use.
    announce : callable, optional
        Called with one line when a new key is made (default: print to standard error).

    Returns
    -------
    catalog.provenance.SigningKey
    """
    from catalog.provenance import default_key_path, load_or_create_signing_key, load_signing_key

    if path is not None:
        return load_signing_key(path)
    key = load_or_create_signing_key(default_key_path())
    if key.created:
        say = announce or (lambda line: print(line, file=sys.stderr))
        say(
            f"made a new operator signing key at {key.path} (public key {key.path}.pub); keep it "
            "safe: it signs every version of your catalogues"
        )
    return key
