"""Ed25519 keys of a catalogue's operator in the signed-note formats (C2SP signed-note): signing keys, verifier keys and their files."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from catalog.provenance.errors import (
    ProvenanceNotFoundError,
    SigningKeyError,
)
from hubcat.errors import KeyFileError
from hubcat.keys import read_ed25519_private_pem, read_ed25519_public_pem

_ALG_ED25519 = 0x01

__all__ = [
    "DEFAULT_KEY_NAME",
    "SigningKey",
    "VerifierKey",
    "default_key_path",
    "generate_signing_key",
    "load_or_create_signing_key",
    "load_signing_key",
    "load_verifier_key",
    "write_key_pair",
]


#: Key name used when the operator gives none.
DEFAULT_KEY_NAME = "hubcat"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or any(c.isspace() or c == "+" for c in name):
        msg = f"key name {name!r} is not usable; a key name is non-empty, without spaces or '+'"
        raise SigningKeyError(msg)
    return name


def _key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([_ALG_ED25519]) + public).digest()[:4]


@dataclass(frozen=True)
class VerifierKey:
    """An Ed25519 public key with its signed-note name.

    Attributes
    ----------
    name : str
        Key name, as on signature lines.
    public : bytes
        The 32-byte Ed25519 public key.
    """

    name: str | None
    public: bytes

    @property
    def key_hash(self) -> bytes:
        """The 4-byte key hash of the signed-note format."""
        return _key_hash(self.name or DEFAULT_KEY_NAME, self.public)

    @property
    def label(self) -> str:
        """``<name>+<key hash hex>``, or the public key's fingerprint when it has no name."""
        if self.name is None:
            return f"with sha256 fingerprint {self.fingerprint[:16]}..."
        return f"{self.name}+{self.key_hash.hex()}"

    @property
    def text(self) -> str:
        """Verifier key text ``<name>+<hash hex>+<base64(0x01 || public key)>``."""
        blob = base64.b64encode(bytes([_ALG_ED25519]) + self.public).decode()
        return f"{self.name or DEFAULT_KEY_NAME}+{self.key_hash.hex()}+{blob}"

    @property
    def fingerprint(self) -> str:
        """sha256 (hex) of the 32-byte public key."""
        return hashlib.sha256(self.public).hexdigest()

    @classmethod
    def parse(cls, text: str, source: str = "verifier key") -> VerifierKey:
        """Parse verifier key text ``<name>+<hash hex>+<base64(0x01 || key)>``.

        Parameters
        ----------
        text : str
            The key text (surrounding whitespace is ignored).
        source : str
            What error messages call the text (a file name).

        Returns
        -------
        VerifierKey

        Raises
        ------
        SigningKeyError
            If the text is malformed, of another algorithm, or its key hash does not match.
        """
        parts = text.strip().split("+", 2)  # base64 may itself hold '+'
        if len(parts) != 3:
            msg = (
                f"{source} is not a signed-note verifier key; expected "
                "'<name>+<8 hex digits>+<base64>' (as written by `hubcat keygen`)"
            )
            raise SigningKeyError(msg)
        name, hash_hex, blob = parts
        _check_name(name)
        try:
            raw = base64.b64decode(blob, validate=True)
            want = bytes.fromhex(hash_hex)
        except (binascii.Error, ValueError):
            msg = f"{source}: the key hash or key of {text.strip()!r} is not valid hex/base64"
            raise SigningKeyError(msg) from None
        if len(raw) != 33 or raw[0] != _ALG_ED25519:
            msg = f"{source}: not an Ed25519 verifier key (algorithm byte and 32-byte key expected)"
            raise SigningKeyError(msg)
        key = cls(name, raw[1:])
        if key.key_hash != want:
            msg = f"{source}: key hash {hash_hex} does not match the key and name {name!r}"
            raise SigningKeyError(msg)
        return key

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``.

        Parameters
        ----------
        message : bytes
            The signed bytes.
        signature : bytes
            The 64-byte Ed25519 signature (without the 4-byte key hash).

        Returns
        -------
        bool
        """
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    """An operator's Ed25519 signing key with its signed-note name.

    Attributes
    ----------
    name : str
        Key name written on signature lines.
    seed : bytes
        The 32-byte Ed25519 private key (seed). Keep it secret.
    path : pathlib.Path or None
        File the key was read from or written to.
    created : bool
        True when :func:`load_or_create_signing_key` made a new key.
    """

    name: str
    seed: bytes = field(repr=False)
    path: Path | None = None
    created: bool = False

    @property
    def _private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def verifier(self) -> VerifierKey:
        """The matching public key."""
        public = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return VerifierKey(self.name, public)

    @property
    def text(self) -> str:
        """Signer key text ``PRIVATE+KEY+<name>+<hash hex>+<base64(0x01 || seed)>``."""
        blob = base64.b64encode(bytes([_ALG_ED25519]) + self.seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_hash.hex()}+{blob}"

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature (64 bytes) of ``message``.

        Parameters
        ----------
        message : bytes
            The bytes to sign.

        Returns
        -------
        bytes
            The 64-byte signature.
        """
        return self._private.sign(message)

    @classmethod
    def parse(cls, text: str, source: str = "signing key") -> SigningKey:
        """Parse ``PRIVATE+KEY+...`` text or a PEM (PKCS#8) Ed25519 private key.

        Parameters
        ----------
        text : str
            ``PRIVATE+KEY+<name>+<hash hex>+<base64>`` (as ``hubcat keygen`` writes it), or an
            unencrypted PEM key (which gets the default key name).
        source : str
            What error messages call the text (a file name).

        Returns
        -------
        SigningKey

        Raises
        ------
        SigningKeyError
            If the text is neither, or is not an Ed25519 key.
        """
        text = text.strip()
        if text.startswith("-----BEGIN"):
            try:
                key = read_ed25519_private_pem(text.encode(), source)
            except KeyFileError as exc:
                raise SigningKeyError(str(exc)) from None
            seed = key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            return cls(DEFAULT_KEY_NAME, seed)
        parts = text.split("+", 4)  # base64 may itself hold '+'
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            msg = (
                f"{source} is not a signing key; expected 'PRIVATE+KEY+<name>+<hash>+<base64>' "
                "(make one with `hubcat keygen`) or a PEM Ed25519 private key"
            )
            raise SigningKeyError(msg)
        _, _, name, hash_hex, blob = parts
        _check_name(name)
        try:
            raw = base64.b64decode(blob, validate=True)
            want = bytes.fromhex(hash_hex)
        except (binascii.Error, ValueError):
            msg = f"{source}: the key hash or key is not valid hex/base64"
            raise SigningKeyError(msg) from None
        if len(raw) != 33 or raw[0] != _ALG_ED25519:
            msg = f"{source}: not an Ed25519 signing key (algorithm byte and 32-byte seed expected)"
            raise SigningKeyError(msg)
        key = cls(name, raw[1:])
        if key.verifier.key_hash != want:
            msg = f"{source}: key hash {hash_hex} does not match the key; the file is damaged"
            raise SigningKeyError(msg)
        return key


def generate_signing_key(name: str = DEFAULT_KEY_NAME) -> SigningKey:
    """A new random Ed25519 signing key called ``name``.

    Parameters
    ----------
    name : str
        Key name (appears in signature lines): non-empty, without spaces or ``+``.

    Returns
    -------
    SigningKey

    Raises
    ------
    SigningKeyError
        If ``name`` is not usable.
    """
    seed = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return SigningKey(_check_name(name), seed)


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        msg = f"{what} {path} does not exist; make a key pair with `hubcat keygen --out DIR`"
        raise ProvenanceNotFoundError(msg) from None
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read {what} {path}: {exc}"
        raise SigningKeyError(msg) from None


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Read an operator's signing key file (as written by ``hubcat keygen``, or PEM).

    Parameters
    ----------
    path : str or path-like
        The private key file.

    Returns
    -------
    SigningKey

    Raises
    ------
    ProvenanceNotFoundError
        If the file does not exist.
    SigningKeyError
        If it is not an Ed25519 signing key.
    """
    path = Path(path).expanduser()
    key = SigningKey.parse(_read_text(path, "signing key"), source=f"signing key {path}")
    return SigningKey(key.name, key.seed, path=path)


def write_key_pair(
    key: SigningKey, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``key`` to ``path`` (mode 0600) and its verifier key to ``path`` + ``.pub``.

    Parameters
    ----------
    key : SigningKey
        The key to write.
    path : str or path-like
        The private key file (``~`` expanded; parent folders are created).
    overwrite : bool
        Replace existing files.

    Returns
    -------
    pathlib.Path
        The public key file.

    Raises
    ------
    SigningKeyError
        If ``path`` or its ``.pub`` file exists and ``overwrite`` is false.
    """
    path = Path(path).expanduser()
    pub = path.with_name(path.name + ".pub")
    if not overwrite and (path.exists() or pub.exists()):
        msg = (
            f"{path} already exists; refusing to replace a signing key (remove it or choose --out)"
        )
        raise SigningKeyError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(key.text + "\n")
    os.chmod(path, 0o600)
    pub.write_text(key.verifier.text + "\n", encoding="utf-8")
    return pub


def default_key_path() -> Path:
    """Where an operator's signing key lives by default.

    ``$HUBCAT_SIGNING_KEY`` when set, else ``~/.hubcat/hubcat.key`` (public key beside it, in
    ``hubcat.key.pub``).

    Returns
    -------
    Path
        With ``~`` expanded; the file need not exist.
    """
    return Path(os.environ.get("HUBCAT_SIGNING_KEY", "~/.hubcat/hubcat.key")).expanduser()


def load_or_create_signing_key(
    path: str | os.PathLike[str], name: str = DEFAULT_KEY_NAME
) -> SigningKey:
    """Read the signing key at ``path``, or make a new one there (public key in ``path.pub``).

    Parameters
    ----------
    path : str or path-like
        The private key file.
    name : str
        Key name of a new key.

    Returns
    -------
    SigningKey
        ``created`` tells whether the key was just made; ``path`` where it is.
    """
    path = Path(path).expanduser()
    if path.exists():
        return load_signing_key(path)
    key = generate_signing_key(name)
    write_key_pair(key, path)
    return SigningKey(key.name, key.seed, path=path, created=True)


def load_verifier_key(source: str | os.PathLike[str] | VerifierKey) -> VerifierKey:
    """A verifier key from a file or text (``<name>+<hash>+<base64>`` or a PEM public key).

    A PEM key carries no name (``name`` is None): a signature line of any name then matches it.

    Parameters
    ----------
    source : str, path-like or VerifierKey
        A key file, the key text itself, or a :class:`VerifierKey` (returned as it is).

    Returns
    -------
    VerifierKey

    Raises
    ------
    ProvenanceNotFoundError
        If a path is given that does not exist.
    SigningKeyError
        If the key is malformed or not Ed25519.
    """
    if isinstance(source, VerifierKey):
        return source
    text = str(source)
    where = "public key"
    path = Path(text).expanduser()
    looks_like_key = text.lstrip().startswith("-----BEGIN") or (
        "+" in text and "\n" not in text.strip()
    )
    if not looks_like_key or path.is_file():
        text = _read_text(path, "public key")
        where = f"public key {path}"
    if "-----BEGIN" in text:
        try:
            key = read_ed25519_public_pem(text.strip().encode(), where)
        except KeyFileError as exc:
            raise SigningKeyError(str(exc)) from None
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return VerifierKey(None, raw)
    return VerifierKey.parse(text, source=where)
