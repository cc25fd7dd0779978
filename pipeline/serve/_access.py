"""Who is calling, what they may do, and what it costs: the service's access gate.

Every API route declares a request *kind* (its cost, :data:`pipeline.serve.COSTS`) and the
*scope* it needs. :meth:`Gate.admit` finds the caller (an API key in ``X-API-Key`` or
``Authorization: Bearer``; else anonymous, by client address), checks the scope (401 without a
valid key when anonymous callers may not do this, 403 for a key without the scope), and charges
the rate limit and daily quota (429 with ``Retry-After``). :class:`MeterMiddleware` then writes
the admitted request, its cost and its HTTP status to the usage ledger; a request that ends in a
4xx or 5xx is refunded and recorded at cost 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.serve._config import ServeConfig
from pipeline.serve._keys import KeyStore
from pipeline.serve._quota import Limits, QuotaKeeper
from pipeline.serve.errors import ForbiddenError, UnauthorizedError

__all__ = ["Caller", "Gate", "MeterMiddleware"]

#: Scopes an anonymous caller holds in each ``anonymous`` mode.
_ANONYMOUS_SCOPES = {"off": (), "read": ("read",), "all": ("read", "search-by-image")}


@dataclass
class Caller:
    """An admitted request's caller and charge (kept in ``request.state.charge``)."""

    caller: str
    name: str
    kind: str
    cost: int
    started: float
    limits: Limits


def _secret(headers) -> str | None:
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class Gate:
    """Authentication, scopes, rate limits and quotas of one service.

    Parameters
    ----------
    config : ServeConfig
    keys : KeyStore, optional
        The API keys (none: only anonymous access, as ``config.anonymous`` allows).
    quotas : QuotaKeeper, optional
    """

    def __init__(
        self, config: ServeConfig, keys: KeyStore | None = None, quotas: QuotaKeeper | None = None
    ) -> None:
        self.config = config
        self.keys = keys
        self.quotas = quotas or QuotaKeeper()
        self._anon_limits = Limits(
            config.anonymous_rate, config.anonymous_burst, config.anonymous_daily
        )

    def admit(self, request, kind: str, scope: str) -> Caller:
        """Admit ``request`` for a route of ``kind`` needing ``scope``, or raise.

        Raises
        ------
        UnauthorizedError
            No key where one is needed, or an unknown or revoked key (401).
        ForbiddenError
            A valid key without ``scope`` (403).
        RateLimitedError
            Over the rate limit or the daily quota (429).
        """
        cost = self.config.cost(kind)
        secret = _secret(request.headers)
        if secret is not None:
            key = self.keys.authenticate(secret) if self.keys is not None else None
            if key is None:
                msg = (
                    "the API key sent is not valid here (unknown or revoked); ask the operator "
                    "for a key, made with `hubcat serve keys add`"
                )
                raise UnauthorizedError(msg)
            if not key.has(scope):
                msg = (
                    f"the API key {key.key_id} ({key.name}) has scopes {key.scopes}; this route "
                    f"needs {scope!r}: ask the operator for a key with it"
                )
                raise ForbiddenError(msg)
            caller = Caller(
                f"key:{key.key_id}",
                key.name,
                kind,
                cost,
                time.perf_counter(),
                Limits(key.rate, key.burst, key.daily),
            )
        else:
            allowed = _ANONYMOUS_SCOPES[self.config.anonymous]
            if scope not in allowed:
                what = (
                    "this service admits no anonymous requests"
                    if not allowed
                    else f"anonymous requests may only use {list(allowed)}, this route needs {scope!r}"
                )
                msg = f"an API key is needed: {what}; send it as the header 'X-API-Key: <key>'"
                raise UnauthorizedError(msg)
            host = request.client.host if request.client else "unknown"
            caller = Caller(
                f"anon:{host}", "anonymous", kind, cost, time.perf_counter(), self._anon_limits
            )
        headers = self.quotas.take(caller.caller, caller.limits, cost)
        request.state.charge = caller
        request.state.quota_headers = headers
        return caller


class MeterMiddleware:
    """ASGI middleware recording every admitted request in the usage ledger.

    It reads ``scope["state"]["charge"]`` (set by :meth:`Gate.admit`) once the response has
    started, adds the quota headers, and writes one ledger entry when the response ends.
    """

    def __init__(self, app, *, ledger=None, quotas: QuotaKeeper | None = None) -> None:
        self.app = app
        self.ledger = ledger
        self.quotas = quotas

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                state = scope.get("state") or {}
                extra = state.get("quota_headers")
                if extra:
                    headers = list(message.get("headers", []))
                    headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            charge = (scope.get("state") or {}).get("charge")
            if charge is not None:
                cost = charge.cost
                if status["code"] >= 400:
                    if self.quotas is not None:
                        self.quotas.refund(charge.caller, cost)
                    cost = 0
                if self.ledger is not None:
                    self.ledger.record(
                        caller=charge.caller,
                        name=charge.name,
                        route=scope.get("path", ""),
                        kind=charge.kind,
                        cost=cost,
                        status=status["code"],
                        ms=(time.perf_counter() - charge.started) * 1e3,
                    )


class BodyLimitMiddleware:
    """ASGI middleware refusing, before reading it, a request body declared larger than
    ``max_bytes`` (413), so an oversized upload never reaches the form parser."""

    def __init__(self, app, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                    import json

                    body = json.dumps(
                        {
                            "error": (
                                f"the request body is {int(value)} bytes; this service accepts at "
                                f"most {self.max_bytes} bytes per upload: crop or bin the image first"
                            ),
                            "status": 413,
                        }
                    ).encode()
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 413,
                            "headers": [
                                (b"content-type", b"application/json"),
                                (b"connection", b"close"),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)
