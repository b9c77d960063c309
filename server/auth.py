"""Bearer-key authentication: admin keys (everything) and read-only keys (search, get, list, metrics).

Authentication happens in :class:`AuthMiddleware`, before any body is read: once a key
is configured, a request to ``/v1/...`` or ``/metrics`` without a valid
``Authorization: Bearer <key>`` is a 401.  Authorisation is a per-route dependency
(:data:`AdminAccess`, :data:`ReadAccess`) that also documents the scheme in OpenAPI:
a read-only key on a write is a 403.  Keys are compared in constant time, as the UTF-8
bytes of the configured key against the raw bytes of the header (HTTP headers are bytes;
decoding them as latin-1 and re-encoding as UTF-8 would make non-ASCII keys unusable).

Optional per-key limits (``key_concurrency``, ``key_rate``; off by default) are enforced
here too, since this is where the key is known: a 429 ``too_many_requests``.
"""

from __future__ import annotations

import hmac
import math
import time
from typing import Annotated, Literal

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import Forbidden, TooManyRequests, Unauthorized, error_response

Role = Literal["admin", "read"]
PROTECTED_PREFIXES = ("/v1/", "/metrics")

bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="`Authorization: Bearer <key>` with an admin or read-only key.")


class KeyRing:
    """The configured keys; ``role(token)`` → ``"admin"``, ``"read"`` or ``None``."""

    def __init__(self, admin: tuple[str, ...], read_only: tuple[str, ...]) -> None:
        self._admin = tuple(k.encode("utf-8") for k in admin)
        self._read = tuple(k.encode("utf-8") for k in read_only)

    @property
    def enabled(self) -> bool:
        return bool(self._admin or self._read)

    def role(self, token: bytes | None) -> Role | None:
        """Role of the raw token bytes (the header's bytes after ``Bearer``)."""
        if not token:
            return None
        admin = any([hmac.compare_digest(token, k) for k in self._admin])  # no short-circuit: constant time
        read = any([hmac.compare_digest(token, k) for k in self._read])
        return "admin" if admin else "read" if read else None

    def role_from_header(self, header: bytes | None) -> Role | None:
        token = bearer_token(header)
        return None if token is None else self.role(token)


def bearer_token(header: bytes | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header value (raw bytes), or None."""
    if not header:
        return None
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.strip()


class KeyLimits:
    """Per-key in-flight and rate limits (token bucket); both off when 0."""

    def __init__(self, concurrency: int, rate: float) -> None:
        self.concurrency = concurrency
        self.rate = rate
        self.burst = max(1.0, rate)
        self.in_flight: dict[bytes, int] = {}
        self.buckets: dict[bytes, tuple[float, float]] = {}  # key -> (tokens, last refill)

    @property
    def enabled(self) -> bool:
        return bool(self.concurrency or self.rate)

    def refusal(self, key: bytes) -> tuple[str, float] | None:
        """(message, retry-after seconds) if ``key`` may not start a request now, else None (and counted)."""
        if self.rate:
            now = time.monotonic()
            tokens, last = self.buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self.buckets[key] = (tokens, now)
                return f"this API key is limited to {self.rate:g} requests/s", (1 - tokens) / self.rate
            self.buckets[key] = (tokens - 1, now)
        if self.concurrency:
            n = self.in_flight.get(key, 0)
            if n >= self.concurrency:
                return f"this API key is limited to {self.concurrency} concurrent requests", 1.0
            self.in_flight[key] = n + 1
        return None

    def release(self, key: bytes) -> None:
        if self.concurrency:
            n = self.in_flight.get(key, 1) - 1
            if n:
                self.in_flight[key] = n
            else:
                self.in_flight.pop(key, None)


def _missing_message(header: bytes | None) -> str:
    if not header:
        return "missing API key: send 'Authorization: Bearer <key>'"
    return "invalid API key"


#: Scope key under which the middleware leaves the authenticated role for the route dependencies.
ROLE_SCOPE_KEY = "vqsearch.role"


class AuthMiddleware:
    """Reject unauthenticated requests to protected paths with a JSON 401 (before reading the body),
    and apply the optional per-key limits."""

    def __init__(self, app: ASGIApp, *, keyring: KeyRing, limits: KeyLimits | None = None) -> None:
        self.app = app
        self.keyring = keyring
        self.limits = limits if limits is not None and limits.enabled else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keyring.enabled or not scope["path"].startswith(PROTECTED_PREFIXES):
            await self.app(scope, receive, send)
            return
        header = None
        for key, value in scope.get("headers", ()):
            if key.lower() == b"authorization":
                header = value
                break
        token = bearer_token(header)
        role = None if token is None else self.keyring.role(token)
        if role is None:
            response = error_response(Unauthorized.http_status, Unauthorized.code, _missing_message(header),
                                      headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        scope[ROLE_SCOPE_KEY] = role
        if self.limits is None:
            await self.app(scope, receive, send)
            return
        assert token is not None
        refused = self.limits.refusal(token)
        if refused is not None:
            message, retry = refused
            response = error_response(TooManyRequests.http_status, TooManyRequests.code, message,
                                      headers={"Retry-After": str(max(1, math.ceil(retry)))})
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.limits.release(token)


def _keyring(request: Request) -> KeyRing:
    return request.app.state.vq.keyring


def _role(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Role | None:
    ring = _keyring(request)
    if not ring.enabled:
        return "admin"
    role = request.scope.get(ROLE_SCOPE_KEY)  # checked by the middleware already
    if role is None and credentials is not None:
        role = ring.role(credentials.credentials.encode("latin-1", "replace"))  # Starlette decodes as latin-1
    if role is None:
        raw = request.headers.get("authorization")
        raise Unauthorized(_missing_message(None if raw is None else raw.encode("latin-1", "replace")))
    return role


Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


async def require_read(request: Request, credentials: Credentials) -> None:
    """Any valid key (or no keys configured)."""
    _role(request, credentials)


async def require_admin(request: Request, credentials: Credentials) -> None:
    """An admin key (or no keys configured); a read-only key is a 403."""
    if _role(request, credentials) != "admin":
        raise Forbidden("this operation needs an admin key; the key presented is read-only")


ReadAccess = Depends(require_read)
AdminAccess = Depends(require_admin)
