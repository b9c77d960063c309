"""HTTP plumbing of the client: requests, the error mapping, and retries of idempotent calls.

Errors: every non-2xx answer of a vqsearch server is ``{"error": <code>, "message": <text>}``.
The code picks the exception class: the library's own class with that ``code`` when there is
one (``dimension_mismatch`` → :class:`~vqsearch.errors.DimensionMismatch`, ``unknown_ids`` →
:class:`~vqsearch.errors.UnknownIds` ...), otherwise a class chosen by the status (400/413/422 →
``InvalidInput``, 401 → ``Unauthorized``, 403 → ``Forbidden``, 404 → ``NotFound``, 409 →
``Conflict``, 429/503/504 → ``ServiceUnavailable``, other 5xx → ``ServerError``).  The raised
instance carries the server's ``code`` and ``http_status`` and, for 429/503, ``retry_after``.

Retries: only calls marked idempotent (search, get, count, scroll, versions, listing) are
retried, on connection errors and on 503 answers with a ``Retry-After`` header, with
exponential backoff (the server's ``Retry-After`` wins when it asks for longer, capped at
``MAX_RETRY_AFTER``).  Writes are sent once: a write whose answer was lost may have been
committed, and only the caller knows whether sending it again is safe.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from .. import errors
from ..errors import VQSearchError

#: Longest wait between two attempts, whatever the server's Retry-After says.
MAX_RETRY_AFTER = 30.0

_BY_CODE: dict[str, type[VQSearchError]] = {}
for _name in errors.__all__:
    _cls = getattr(errors, _name)
    if isinstance(_cls, type) and issubclass(_cls, VQSearchError) and _cls is not VQSearchError:
        _BY_CODE.setdefault(_cls.code, _cls)
_BY_STATUS: dict[int, type[VQSearchError]] = {
    400: errors.InvalidInput, 401: errors.Unauthorized, 403: errors.Forbidden, 404: errors.NotFound,
    409: errors.Conflict, 413: errors.InvalidInput, 415: errors.InvalidInput, 422: errors.InvalidInput,
    429: errors.ServiceUnavailable, 503: errors.ServiceUnavailable, 504: errors.ServiceUnavailable,
}


@dataclass
class Call:
    """One HTTP request, built once and sent by the sync (or an async) transport."""

    method: str
    path: str
    json: Any = None
    content: bytes | None = None
    params: Mapping[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotent: bool = False

    def body(self) -> tuple[bytes | None, dict[str, str]]:
        if self.json is not None:
            return orjson.dumps(self.json, option=orjson.OPT_SERIALIZE_NUMPY), {
                "Content-Type": "application/json", **self.headers}
        return self.content, dict(self.headers)


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> VQSearchError:
    """The library exception for a non-2xx answer (see the module docstring)."""
    code, message = None, None
    try:
        doc = orjson.loads(body)
        if isinstance(doc, dict):
            code, message = doc.get("error"), doc.get("message")
    except orjson.JSONDecodeError:
        pass
    if not isinstance(code, str):
        code = f"http_{status}"
    if not isinstance(message, str):
        message = f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
    cls = _BY_CODE.get(code)
    if cls is None or (status >= 500) != (cls.http_status >= 500):  # e.g. corrupt_data answered as a 500
        cls = _BY_STATUS.get(status, errors.ServerError if status >= 500 else errors.InvalidInput)
    exc = cls(message)
    exc.code = code
    exc.http_status = status
    retry = retry_after(headers)
    if retry is not None:
        exc.retry_after = retry  # type: ignore[attr-defined]
    return exc


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The ``Retry-After`` header in seconds (the delay form only), or None."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and backoff of idempotent calls: ``retries`` extra attempts, waits ``backoff`` × 2^i ± 25%."""

    retries: int = 3
    backoff: float = 0.25

    def wait(self, attempt: int, hint: float | None) -> float:
        base = self.backoff * (2 ** attempt) * random.uniform(0.75, 1.25)
        return min(MAX_RETRY_AFTER, max(base, hint or 0.0))


def retryable_status(response: httpx.Response) -> bool:
    return response.status_code == 503 and "retry-after" in response.headers


class SyncTransport:
    """Sends :class:`Call` s with an ``httpx.Client``; maps errors; retries idempotent calls."""

    def __init__(self, url: str, api_key: str | None, timeout: float, policy: RetryPolicy,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"User-Agent": "vqsearch-client", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)
        self.policy = policy

    def close(self) -> None:
        self.http.close()

    def send(self, call: Call) -> httpx.Response:
        """The 2xx response of ``call``; raises the mapped library error otherwise."""
        content, headers = call.body()
        attempts = 1 + (self.policy.retries if call.idempotent else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                r = self.http.request(call.method, call.path, content=content, params=call.params, headers=headers)
            except httpx.TransportError as exc:
                if last or isinstance(exc, httpx.UnsupportedProtocol):
                    raise errors.ConnectionFailed(f"{call.method} {call.path}: {type(exc).__name__}: {exc}") from exc
                time.sleep(self.policy.wait(attempt, None))
                continue
            if r.is_success:
                return r
            if not last and retryable_status(r):
                time.sleep(self.policy.wait(attempt, retry_after(r.headers)))
                continue
            raise error_from_response(r.status_code, r.content, r.headers)
        raise AssertionError("unreachable")  # pragma: no cover
