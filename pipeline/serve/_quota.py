"""Per-caller rate limits (token buckets) and daily quotas (usage units per UTC day).

A caller is an API key (by id) or, without a key, a client address. Each request takes one token
from the caller's bucket (``burst`` tokens, refilled at ``rate`` per second) and its cost in
usage units from the caller's daily quota, which resets at midnight UTC. A request that finds the
bucket empty or the quota spent is refused with :class:`RateLimitedError`, whose ``retry_after``
is the number of seconds until it would pass. Refused requests take nothing.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipeline.serve.errors import RateLimitedError

__all__ = ["Limits", "QuotaKeeper", "utc_day"]


def utc_day(ts: float | None = None) -> str:
    """The UTC date of ``ts`` (default: now), ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).strftime("%Y-%m-%d")


def _seconds_to_midnight(ts: float) -> float:
    now = datetime.fromtimestamp(ts, UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


@dataclass(frozen=True)
class Limits:
    """A caller's limits: ``rate`` requests/s, ``burst`` bucket size, ``daily`` units per day."""

    rate: float
    burst: int
    daily: int


class QuotaKeeper:
    """Token buckets and daily usage of every caller, thread-safe, in memory.

    Daily usage survives a restart when the service seeds it from the usage ledger
    (:meth:`seed`).
    """

    def __init__(self, clock=time.monotonic, wall=time.time) -> None:
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, last refill)
        self._used: dict[tuple[str, str], int] = {}  # (caller, day) -> units

    def seed(self, caller: str, day: str, units: int) -> None:
        """Count ``units`` already spent by ``caller`` on ``day`` (from the ledger)."""
        with self._lock:
            self._used[(caller, day)] = self._used.get((caller, day), 0) + int(units)

    def used_today(self, caller: str) -> int:
        """Units ``caller`` spent today (UTC)."""
        return self._used.get((caller, utc_day(self._wall())), 0)

    def take(self, caller: str, limits: Limits, cost: int) -> dict[str, str]:
        """Charge one request of ``cost`` units to ``caller``; return informative headers.

        Raises
        ------
        RateLimitedError
            Over the rate limit or the daily quota (nothing is charged).
        """
        now, wall = self._clock(), self._wall()
        day = utc_day(wall)
        with self._lock:
            tokens, last = self._buckets.get(caller, (float(limits.burst), now))
            tokens = min(float(limits.burst), tokens + (now - last) * limits.rate)
            used = self._used.get((caller, day), 0)
            if used + cost > limits.daily:
                wait = math.ceil(_seconds_to_midnight(wall))
                self._buckets[caller] = (tokens, now)
                msg = (
                    f"daily quota of {limits.daily} units spent ({used} used today, this request "
                    f"costs {cost}); it resets at 00:00 UTC, in {wait} s"
                )
                raise RateLimitedError(msg, wait)
            if tokens < 1.0:
                wait = math.ceil((1.0 - tokens) / limits.rate)
                self._buckets[caller] = (tokens, now)
                msg = (
                    f"rate limit of {limits.rate:g} requests/s (burst {limits.burst}) exceeded; "
                    f"retry in {wait} s"
                )
                raise RateLimitedError(msg, wait)
            self._buckets[caller] = (tokens - 1.0, now)
            self._used[(caller, day)] = used + cost
            remaining = limits.daily - used - cost
        return {"X-Quota-Limit": str(limits.daily), "X-Quota-Remaining": str(remaining)}

    def refund(self, caller: str, units: int) -> None:
        """Give back ``units`` charged today to ``caller`` (a request that failed)."""
        day = utc_day(self._wall())
        with self._lock:
            key = (caller, day)
            self._used[key] = max(0, self._used.get(key, 0) - int(units))
