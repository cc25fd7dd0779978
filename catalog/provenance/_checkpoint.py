"""Signed tree heads: C2SP checkpoints in C2SP signed notes, with Ed25519 keys.

A checkpoint (https://c2sp.org/tlog-checkpoint) is the note text::

    <origin>
    <tree size, decimal>
    <root hash, standard base64>

followed by a blank line and one signature line per signer (https://c2sp.org/signed-note)::

    — <key name> <base64(key hash (4 bytes) || Ed25519 signature (64 bytes))>

The key hash is the first 4 bytes of ``SHA-256(key name || 0x0A || 0x01 || public key)`` (0x01 is
the Ed25519 signature type). Keys use the same text encodings as Go's ``golang.org/x/mod/sumdb/note``:
a verifier key ``<name>+<key hash hex>+<base64(0x01 || public key)>`` and a signer key
``PRIVATE+KEY+<name>+<key hash hex>+<base64(0x01 || seed)>``, so standard tools check hubcat
checkpoints and hubcat checks theirs.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from catalog.provenance._keys import (
    DEFAULT_KEY_NAME,
    SigningKey,
    VerifierKey,
    default_key_path,
    generate_signing_key,
    load_or_create_signing_key,
    load_signing_key,
    load_verifier_key,
    write_key_pair,
)
from catalog.provenance._merkle import HASH_SIZE
from catalog.provenance.errors import (
    CheckpointError,
    SignatureError,
)

__all__ = [
    "DEFAULT_KEY_NAME",
    "Checkpoint",
    "SigningKey",
    "VerifierKey",
    "default_key_path",
    "generate_signing_key",
    "load_or_create_signing_key",
    "load_signing_key",
    "load_verifier_key",
    "write_key_pair",
]

_SIG_PREFIX = "\u2014 "  # em dash and a space


# --------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head: origin, tree size and root, with the signed-note signatures.

    Attributes
    ----------
    origin : str
        Identity of the log (first line).
    size : int
        Number of leaves.
    root : bytes
        32-byte Merkle root.
    extensions : tuple of str
        Further body lines (none written by hubcat; kept when read).
    signatures : tuple of (str, bytes)
        ``(key name, key hash (4 bytes) + signature (64 bytes))`` per signature line.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()
    signatures: tuple[tuple[str, bytes], ...] = ()

    @property
    def body(self) -> str:
        """The signed text: origin, size, base64 root, extension lines, each ending in newline."""
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root).decode(),
            *self.extensions,
        ]
        return "".join(line + "\n" for line in lines)

    @property
    def text(self) -> str:
        """The whole note: body, and when signed a blank line and the signature lines."""
        if not self.signatures:
            return self.body
        sigs = "".join(
            f"{_SIG_PREFIX}{name} {base64.b64encode(blob).decode()}\n"
            for name, blob in self.signatures
        )
        return self.body + "\n" + sigs

    def signed(self, key: SigningKey) -> Checkpoint:
        """This checkpoint with ``key``'s signature added.

        Parameters
        ----------
        key : SigningKey
            The key that signs the checkpoint's body.

        Returns
        -------
        Checkpoint
            A new checkpoint: the same body, its signatures plus one line by ``key.name``
            (key hash and Ed25519 signature).
        """
        sig = key.verifier.key_hash + key.sign(self.body.encode())
        return Checkpoint(
            self.origin,
            self.size,
            self.root,
            self.extensions,
            (*self.signatures, (key.name, sig)),
        )

    def signature_failure(self, key: VerifierKey) -> str | None:
        """Why this checkpoint is not validly signed by ``key``, or ``None`` if it is.

        Parameters
        ----------
        key : VerifierKey
            The expected signer; a nameless (PEM) key matches a signature line of any name.

        Returns
        -------
        str or None
            The reason (no signature, no line by this key, a signature that does not match the
            text), or None when a signature verifies.
        """
        if not self.signatures:
            return "the checkpoint carries no signature"
        body = self.body.encode()
        names = []
        for name, blob in self.signatures:
            names.append(f"{name}+{blob[:4].hex()}")
            if key.name is None:  # a PEM key has no name: take the one on the line
                candidate = VerifierKey(name, key.public)
            elif key.name == name:
                candidate = key
            else:
                continue
            if blob[:4] != candidate.key_hash:
                continue
            if candidate.verify(body, blob[4:]):
                return None
            return f"the signature by {name}+{blob[:4].hex()} does not match the checkpoint text"
        return (
            f"the checkpoint is not signed by key {key.label}; "
            f"it carries signatures by {', '.join(names)}"
        )

    def verify(self, key: VerifierKey) -> None:
        """Raise :class:`SignatureError` unless ``key`` signed this checkpoint.

        Parameters
        ----------
        key : VerifierKey
            The expected signer.

        Raises
        ------
        SignatureError
            With the reason :meth:`signature_failure` gives.
        """
        failure = self.signature_failure(key)
        if failure:
            raise SignatureError(failure, [failure])

    @classmethod
    def parse(cls, text: str | bytes, source: str = "checkpoint") -> Checkpoint:
        """Parse a checkpoint note (signed or not).

        Parameters
        ----------
        text : str or bytes
            The note: origin, tree size and base64 root lines, optional extension lines, then
            (if signed) a blank line and ``— <name> <base64>`` signature lines. UTF-8 if bytes.
        source : str
            What error messages call the text (a file name).

        Returns
        -------
        Checkpoint
            Its signatures are parsed, not verified (see :meth:`verify`).

        Raises
        ------
        CheckpointError
            If the text is not a C2SP checkpoint (naming the line at fault).
        """
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                msg = f"{source} is not UTF-8 text"
                raise CheckpointError(msg) from None
        if not text.endswith("\n"):
            msg = f"{source} does not end with a newline; it is truncated or not a checkpoint"
            raise CheckpointError(msg)
        body, sep, sig_text = text.partition("\n\n")
        body = body + "\n" if sep else text
        lines = body.splitlines()
        if len(lines) < 3:
            msg = f"{source} has {len(lines)} body lines; a checkpoint has origin, size and root"
            raise CheckpointError(msg)
        origin, size_text, root_text, *extensions = lines
        if not origin:
            msg = f"{source}: the origin line is empty"
            raise CheckpointError(msg)
        if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
            msg = f"{source}: tree size {size_text!r} is not a decimal integer"
            raise CheckpointError(msg)
        try:
            root = base64.b64decode(root_text, validate=True)
        except binascii.Error:
            msg = f"{source}: root {root_text!r} is not base64"
            raise CheckpointError(msg) from None
        if len(root) != HASH_SIZE:
            msg = f"{source}: root is {len(root)} bytes, not a 32-byte SHA-256 hash"
            raise CheckpointError(msg)
        signatures = []
        if sep:
            for line in sig_text.splitlines():
                if not line.startswith(_SIG_PREFIX):
                    msg = f"{source}: signature line {line!r} does not start with '\u2014 '"
                    raise CheckpointError(msg)
                name, _, blob_text = line[len(_SIG_PREFIX) :].partition(" ")
                try:
                    blob = base64.b64decode(blob_text, validate=True)
                except binascii.Error:
                    msg = f"{source}: the signature of {name!r} is not base64"
                    raise CheckpointError(msg) from None
                if not name or len(blob) < 5:
                    msg = f"{source}: signature line {line!r} is malformed"
                    raise CheckpointError(msg)
                signatures.append((name, blob))
            if not signatures:
                msg = f"{source}: a blank line but no signature lines follow the body"
                raise CheckpointError(msg)
        return cls(origin, int(size_text), root, tuple(extensions), tuple(signatures))
