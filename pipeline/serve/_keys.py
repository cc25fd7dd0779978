"""API keys: random secrets, stored only as SHA-256 hashes, each with scopes and limits.

A key's secret is ``hck_<key id>_<43 random URL-safe characters>`` (256 bits from
:mod:`secrets`); it is shown once, when made, and the key file keeps only its SHA-256. Because the
secret is random and long, one SHA-256 is enough to store it (as for GitHub or Stripe tokens; a
slow password hash protects guessable secrets, which these are not). The key file is JSON, written
atomically with mode 0600; the service re-reads it when it changes, so a revoked key stops working
on the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipeline.serve.errors import KeyFileError

__all__ = ["SCOPES", "ApiKey", "KeyStore"]

#: Scopes a key may hold. ``admin`` implies the other two.
SCOPES: tuple[str, ...] = ("read", "search-by-image", "admin")
_FORMAT = "hubcat-serve-keys"
_PREFIX = "hck_"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass
class ApiKey:
    """One API key as stored (never its secret).

    Attributes
    ----------
    key_id : str
        Public identifier (part of the secret, shown in the usage ledger).
    name : str
        Who the key is for.
    sha256 : str
        SHA-256 of the secret, hex.
    scopes : list of str
    rate : float
        Requests per second (token bucket refill).
    burst : int
        Token bucket size.
    daily : int
        Usage units per UTC day.
    created : str
    revoked : str
        When it was revoked (empty while valid).
    """

    key_id: str
    name: str
    sha256: str
    scopes: list[str]
    rate: float
    burst: int
    daily: int
    created: str = field(default_factory=_now)
    revoked: str = ""

    def has(self, scope: str) -> bool:
        """Whether the key grants ``scope`` (``admin`` grants every scope)."""
        return scope in self.scopes or "admin" in self.scopes

    def public(self) -> dict:
        """The key's record without its hash (for listings)."""
        out = asdict(self)
        out.pop("sha256")
        return out


def check_scopes(scopes: list[str] | tuple[str, ...]) -> list[str]:
    """``scopes`` deduplicated, in :data:`SCOPES` order; raises for an unknown one."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        msg = f"scope(s) {unknown or scopes!r} unknown; choose from {list(SCOPES)}"
        raise KeyFileError(msg)
    return [s for s in SCOPES if s in scopes]


class KeyStore:
    """The API keys of a service, in one JSON file.

    Parameters
    ----------
    path : str or path-like
        The key file (made on the first :meth:`add`).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, ApiKey] = {}

    # ------------------------------------------------------------------ file

    def _load(self) -> dict[str, ApiKey]:
        """The keys, re-read when the file changed since the last read."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._keys = None, {}
            return self._keys
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return self._keys
        with self._lock:
            try:
                doc = json.loads(self.path.read_text(encoding="utf-8"))
                if doc.get("format") != _FORMAT:
                    raise ValueError(f"format is {doc.get('format')!r}, not {_FORMAT!r}")
                keys = {k["key_id"]: ApiKey(**k) for k in doc["keys"]}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                msg = (
                    f"API key file {self.path} is not readable ({exc}); restore it or make a new "
                    "one with `hubcat serve keys add --keys FILE NAME`"
                )
                raise KeyFileError(msg) from None
            self._keys, self._stamp = keys, stamp
        return self._keys

    def _save(self, keys: dict[str, ApiKey]) -> None:
        doc = {"format": _FORMAT, "version": 1, "keys": [asdict(k) for k in keys.values()]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, self.path)
        self._stamp = None

    # ------------------------------------------------------------------ public

    def keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, in the order they were made."""
        return list(self._load().values())

    def add(
        self,
        name: str,
        scopes: list[str] | tuple[str, ...] = ("read",),
        *,
        rate: float = 50.0,
        burst: int = 100,
        daily: int = 100_000,
    ) -> tuple[ApiKey, str]:
        """Make a key; return its record and its secret (shown only this once).

        Raises
        ------
        KeyFileError
            An unknown scope, a non-positive limit, or an unreadable key file.
        """
        if not name or not name.strip():
            msg = "a key needs a name saying whom it is for, e.g. `hubcat serve keys add alice`"
            raise KeyFileError(msg)
        if not rate > 0 or int(burst) < 1 or int(daily) < 0:
            msg = f"rate={rate!r}, burst={burst!r}, daily={daily!r}: rate and burst must be positive, daily >= 0"
            raise KeyFileError(msg)
        keys = dict(self._load())
        key_id = secrets.token_hex(4)
        while key_id in keys:
            key_id = secrets.token_hex(4)
        secret = f"{_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey(
            key_id,
            name.strip(),
            _digest(secret),
            check_scopes(scopes),
            float(rate),
            int(burst),
            int(daily),
        )
        keys[key_id] = key
        self._save(keys)
        return key, secret

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke the key ``key_id`` (kept in the file, marked revoked).

        Raises
        ------
        KeyFileError
            No such key.
        """
        keys = dict(self._load())
        if key_id not in keys:
            msg = f"no API key {key_id!r} in {self.path}; list them with `hubcat serve keys list --keys {self.path}`"
            raise KeyFileError(msg)
        if not keys[key_id].revoked:
            keys[key_id].revoked = _now()
            self._save(keys)
        return keys[key_id]

    def authenticate(self, secret: str) -> ApiKey | None:
        """The valid (not revoked) key whose secret is ``secret``, else ``None``."""
        if not secret.startswith(_PREFIX):
            return None
        key_id = secret[len(_PREFIX) :].partition("_")[0]
        key = self._load().get(key_id)
        if key is None or key.revoked:
            return None
        if not hmac.compare_digest(key.sha256, _digest(secret)):
            return None
        return key
