"""Request-body size limits, enforced before the body is read.

A declared ``Content-Length`` above the limit is answered with 413 at once, without
reading a byte.  Bodies without one (chunked transfer) are counted as they stream in;
when the count passes the limit, the next ``receive()`` raises and whatever the app
was about to answer is replaced by the 413.  The limit depends on the media type:
Arrow IPC streams (bulk ingest) may be much larger than JSON bodies.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import PayloadTooLarge, error_response

ARROW_STREAM = "application/vnd.apache.arrow.stream"
#: After deciding on a 413, up to this many further body bytes are read and discarded before answering.
#: A client that is still sending when the server closes the socket gets a TCP reset and may lose the
#: answer; draining a bounded amount lets ordinary clients read the 413.  Larger bodies are cut off.
DRAIN_MAX = 64 << 20


class _BodyTooLarge(Exception):
    pass


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


class BodyLimitMiddleware:
    """Reject request bodies above ``max_json`` bytes (``max_arrow`` for Arrow streams) with a JSON 413."""

    def __init__(self, app: ASGIApp, *, max_json: int, max_arrow: int) -> None:
        self.app = app
        self.max_json = max_json
        self.max_arrow = max_arrow

    def limit_for(self, scope: Scope) -> int:
        ctype = (_header(scope, b"content-type") or b"").split(b";")[0].strip().decode("latin-1").lower()
        return self.max_arrow if ctype == ARROW_STREAM else self.max_json

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = -1
            if size < 0:
                await error_response(400, "bad_request", "invalid Content-Length header")(scope, receive, send)
                return
            if size > limit:
                if size <= DRAIN_MAX:
                    await _drain(receive, DRAIN_MAX)
                await self._reject(scope, receive, send, limit, size)
                return
        received = 0
        exceeded = False
        started = False
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded, body_done
            if exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # the app answered after a failed read: replace its answer by the 413
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _drain(receive, -1 if body_done else DRAIN_MAX - received)
                    await self._reject(scope, receive, send, limit, None)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            if not started:
                await _drain(receive, -1 if body_done else DRAIN_MAX - received)
                await self._reject(scope, receive, send, limit, None)
        except Exception:
            if exceeded and not started:  # some layer wrapped our signal in another exception
                await _drain(receive, -1 if body_done else DRAIN_MAX - received)
                await self._reject(scope, receive, send, limit, None)
            else:
                raise

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, limit: int, size: int | None) -> None:
        what = "request body" if size is None else f"request body of {size:,} bytes"
        message = f"{what} exceeds the limit of {limit:,} bytes"
        await error_response(PayloadTooLarge.http_status, PayloadTooLarge.code, message,
                             headers={"Connection": "close"})(scope, receive, send)


async def _drain(receive: Receive, budget: int) -> None:
    """Read and discard the rest of the request body, at most ``budget`` bytes."""
    seen = 0
    while seen <= budget:  # budget < 0: the body was read completely already
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
