"""Limits and prices of the service, in one place (recorded in ``/api/info``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["ANONYMOUS_MODES", "COSTS", "ServeConfig"]

#: What an anonymous caller (no API key) may do: nothing, read-only lookups, or everything.
ANONYMOUS_MODES: tuple[str, ...] = ("off", "read", "all")

#: Cost of one request of each kind, in usage units (what quotas count and the ledger records).
#: An image search embeds the upload with the catalogue's network (8 forward passes), the
#: rest are index or table look-ups.
COSTS: dict[str, int] = {
    "info": 0,
    "lookup": 1,
    "similar": 1,
    "cone": 1,
    "scs": 1,
    "cutout": 1,
    "provenance": 2,
    "image": 20,
    "admin": 0,
}


@dataclass(frozen=True)
class ServeConfig:
    """Configuration of one ``hubcat serve`` process.

    Attributes
    ----------
    anonymous : str
        ``"off"`` (every request needs a key), ``"read"`` (no key: read scope at the anonymous
        rate) or ``"all"`` (no key: every scope but admin; for a private loopback service).
    anonymous_rate : float
        Requests per second an anonymous caller may make (token bucket), per client address.
    anonymous_burst : int
        Bucket size for anonymous callers.
    anonymous_daily : int
        Usage units per UTC day for each anonymous client address.
    default_rate, default_burst, default_daily
        Limits of a key made without its own.
    max_k : int
        Largest number of neighbours per search.
    max_radius_deg : float
        Largest cone or SCS radius, in degrees.
    max_upload_bytes : int
        Largest accepted image upload.
    costs : dict
        Usage units per request kind (see :data:`COSTS`).
    """

    anonymous: str = "read"
    anonymous_rate: float = 5.0
    anonymous_burst: int = 20
    anonymous_daily: int = 2_000
    default_rate: float = 50.0
    default_burst: int = 100
    default_daily: int = 100_000
    max_k: int = 100
    max_radius_deg: float = 1.0
    max_upload_bytes: int = 8 * 1024 * 1024
    costs: dict[str, int] = field(default_factory=lambda: dict(COSTS))

    def __post_init__(self) -> None:
        from pipeline.serve.errors import ServeError

        if self.anonymous not in ANONYMOUS_MODES:
            msg = f"anonymous={self.anonymous!r}; choose one of {list(ANONYMOUS_MODES)}"
            raise ServeError(msg)
        for name in ("anonymous_rate", "default_rate", "max_radius_deg"):
            if not getattr(self, name) > 0:
                msg = f"{name}={getattr(self, name)!r} must be positive"
                raise ServeError(msg)
        for name in ("anonymous_burst", "default_burst", "max_k", "max_upload_bytes"):
            if int(getattr(self, name)) < 1:
                msg = f"{name}={getattr(self, name)!r} must be a positive integer"
                raise ServeError(msg)

    def cost(self, kind: str) -> int:
        """Usage units of one request of ``kind``."""
        return int(self.costs.get(kind, 1))

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return asdict(self)
