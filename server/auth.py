"""Bearer-key authentication: admin keys (everything) and read-only keys (search, get, list, metrics).

Authentication happens in :class:`AuthMiddleware`, before any body is read: once a key
is configured, a request to ``/v1/...`` or ``/metrics`` without a valid
``Authorization: Bearer <key>`` is a 401.  Authorisation is a per-route dependency
(:data:`AdminAccess`, :data:`ReadAccess`) that also documents the scheme in OpenAPI:
a read-only key on a write is a 403.  Keys are compared in constant time.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import Forbidden, Unauthorized, error_response

Role = Literal["admin", "read"]
PROTECTED_PREFIXES = ("/v1/", "/metrics")

bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="`Authorization: Bearer <key>` with an admin or read-only key.")


class KeyRing:
    """The configured keys; ``role(token)`` → ``"admin"``, ``"read"`` or ``None``."""

    def __init__(self, admin: tuple[str, ...], read_only: tuple[str, ...]) -> None:
        self._admin = tuple(k.encode() for k in admin)
        self._read = tuple(k.encode() for k in read_only)

    @property
    def enabled(self) -> bool:
        return bool(self._admin or self._read)

    def role(self, token: str | None) -> Role | None:
        if not token:
            return None
        t = token.encode("utf-8", "surrogateescape")
        admin = any([hmac.compare_digest(t, k) for k in self._admin])  # no short-circuit: constant time
        read = any([hmac.compare_digest(t, k) for k in self._read])
        return "admin" if admin else "read" if read else None

    def role_from_header(self, header: str | None) -> Role | None:
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.role(token.strip())


def _missing_message(header: str | None) -> str:
    if not header:
        return "missing API key: send 'Authorization: Bearer <key>'"
    return "invalid API key"


class AuthMiddleware:
    """Reject unauthenticated requests to protected paths with a JSON 401 (before reading the body)."""

    def __init__(self, app: ASGIApp, *, keyring: KeyRing) -> None:
        self.app = app
        self.keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keyring.enabled and scope["path"].startswith(PROTECTED_PREFIXES):
            header = None
            for key, value in scope.get("headers", ()):
                if key.lower() == b"authorization":
                    header = value.decode("latin-1")
                    break
            if self.keyring.role_from_header(header) is None:
                response = error_response(Unauthorized.http_status, Unauthorized.code, _missing_message(header),
                                          headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _keyring(request: Request) -> KeyRing:
    return request.app.state.vq.keyring


def _role(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Role | None:
    ring = _keyring(request)
    if not ring.enabled:
        return "admin"
    role = ring.role(credentials.credentials) if credentials is not None else None
    if role is None:
        raise Unauthorized(_missing_message(request.headers.get("authorization")))
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
