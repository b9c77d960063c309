"""Request-body limits, enforced before and while the body is read.

* **Size.** A declared ``Content-Length`` above the limit is answered with 413 at once,
  without asking for the body: with ``Expect: 100-continue`` the client has sent nothing
  and never gets a ``100 Continue``; otherwise the server reads and discards what the
  client keeps sending for a short, bounded time (:data:`DRAIN_IDLE`, :data:`DRAIN_MAX`),
  because closing a socket with unread data resets it and the client could lose the 413.
  Bodies without a length (chunked transfer) are counted as they stream in; when the count
  passes the limit, the next ``receive()`` raises and whatever the app was about to answer
  is replaced by the 413.  The limit depends on the media type: Arrow IPC streams (bulk
  ingest) may be much larger than JSON bodies.
* **Time.** A body must keep arriving: a pause longer than ``body_timeout`` seconds, or an
  average rate below ``min_body_rate`` bytes/s once ``body_timeout`` seconds have passed,
  ends the request with 408 ``request_timeout`` and closes the connection (slow-body
  "slowloris" clients).  Slow *headers* are cut off by the HTTP protocol (see
  :mod:`.protocol`), since no ASGI app runs before the headers are complete.
"""

from __future__ import annotations

import asyncio
import sys
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import PayloadTooLarge, RequestTimeout, error_response

ARROW_STREAM = "application/vnd.apache.arrow.stream"
#: After deciding on a 413, at most this many further body bytes are read and discarded ...
DRAIN_MAX = 64 << 20
#: ... and only while they keep coming: draining stops after this many seconds without data ...
DRAIN_IDLE = 0.2
#: ... or after this many seconds in total.
DRAIN_TOTAL = 5.0


if sys.version_info >= (3, 11):
    async def _within(receive: Receive, seconds: float) -> Message:
        async with asyncio.timeout(seconds):  # no extra task, unlike wait_for on 3.11
            return await receive()
else:  # pragma: no cover - Python 3.10
    async def _within(receive: Receive, seconds: float) -> Message:
        return await asyncio.wait_for(receive(), timeout=seconds)


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


class BodyLimitMiddleware:
    """Reject request bodies above ``max_json`` bytes (``max_arrow`` for Arrow streams) with a JSON 413,
    and bodies that arrive too slowly with a JSON 408."""

    def __init__(self, app: ASGIApp, *, max_json: int, max_arrow: int, body_timeout: float = 30.0,
                 min_body_rate: float = 64 * 1024) -> None:
        self.app = app
        self.max_json = max_json
        self.max_arrow = max_arrow
        self.body_timeout = body_timeout
        self.min_body_rate = min_body_rate

    def limit_for(self, scope: Scope) -> int:
        ctype = (_header(scope, b"content-type") or b"").split(b";")[0].strip().decode("latin-1").lower()
        return self.max_arrow if ctype == ARROW_STREAM else self.max_json

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _header(scope, b"content-length")
        if declared is not None:  # the HTTP parser has checked it is a single, well-formed number
            size = int(declared) if declared.isdigit() and len(declared) < 20 else -1
            if size < 0:
                await error_response(400, "bad_request", "invalid Content-Length header")(scope, receive, send)
                return
            if size > limit:
                expect = (_header(scope, b"expect") or b"").lower() == b"100-continue"
                if not expect:
                    await _drain(receive, DRAIN_MAX)
                await self._reject(scope, receive, send, limit, size)
                return
        received = 0
        exceeded = False
        too_slow = False
        started = False
        body_done = False
        t0 = time.monotonic()

        async def limited_receive() -> Message:
            nonlocal received, exceeded, too_slow, body_done
            if exceeded:
                raise _BodyTooLarge
            if too_slow:
                raise _BodyTooSlow
            if body_done:
                return await receive()  # waiting for a disconnect: no time limit
            # a pause of at most body_timeout, and an average rate of min_body_rate after the grace period
            allowed = self.body_timeout + received / self.min_body_rate - (time.monotonic() - t0)
            try:
                message = await _within(receive, max(0.0, min(self.body_timeout, allowed)))
            except (TimeoutError, asyncio.TimeoutError):
                too_slow = True
                raise _BodyTooSlow from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded or too_slow:  # the app answered after a failed read: replace its answer
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._answer_failed_read(scope, receive, send, limit, exceeded, body_done, received)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except (_BodyTooLarge, _BodyTooSlow):
            if not started:
                await self._answer_failed_read(scope, receive, send, limit, exceeded, body_done, received)
        except Exception:
            if (exceeded or too_slow) and not started:  # some layer wrapped our signal in another exception
                await self._answer_failed_read(scope, receive, send, limit, exceeded, body_done, received)
            else:
                raise

    async def _answer_failed_read(self, scope: Scope, receive: Receive, send: Send, limit: int, exceeded: bool,
                                  body_done: bool, received: int) -> None:
        if exceeded:
            await _drain(receive, -1 if body_done else DRAIN_MAX - received)
            await self._reject(scope, receive, send, limit, None)
        else:
            message = (f"the request body arrived too slowly (a pause above {self.body_timeout:g} s or less than "
                       f"{self.min_body_rate:,.0f} bytes/s; settings body_timeout, min_body_rate)")
            await error_response(RequestTimeout.http_status, RequestTimeout.code, message,
                                 headers={"Connection": "close"})(scope, receive, send)

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, limit: int, size: int | None) -> None:
        what = "request body" if size is None else f"request body of {size:,} bytes"
        message = f"{what} exceeds the limit of {limit:,} bytes"
        await error_response(PayloadTooLarge.http_status, PayloadTooLarge.code, message,
                             headers={"Connection": "close"})(scope, receive, send)


async def _drain(receive: Receive, budget: int) -> None:
    """Read and discard the rest of the request body: at most ``budget`` bytes, and only while it keeps
    coming (:data:`DRAIN_IDLE`, :data:`DRAIN_TOTAL`)."""
    seen = 0
    end = time.monotonic() + DRAIN_TOTAL
    while seen <= budget:  # budget < 0: the body was read completely already
        wait = min(DRAIN_IDLE, end - time.monotonic())
        if wait <= 0:
            return
        try:
            message = await _within(receive, wait)
        except (TimeoutError, asyncio.TimeoutError):
            return
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
