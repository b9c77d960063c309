"""The HTTP/1.1 protocol under the app: uvicorn's httptools protocol with connection hygiene.

uvicorn answers some requests before any ASGI app runs, and has no limits for others.
This subclass adds what the API promises:

* **Header timeout.** A connection has ``header_timeout`` seconds to deliver a complete
  request line and headers (from connect, and again after each response).  Slow-header
  ("slowloris") clients get a 408 if they sent part of a request, or are closed if idle.
* **Header size.** Request line plus headers above ``max_header_bytes`` → 431.
* **Connection count.** Above ``max_connections`` open connections a new one is closed at
  once, so descriptors and memory stay bounded; the default leaves room for real load.
* **JSON errors.** uvicorn's own plain-text 400 for unparseable requests (bad or conflicting
  ``Content-Length``, bad chunk sizes, malformed request lines) is sent in the API's
  ``{"error", "message"}`` shape.

Used by :func:`vqsearch.server.serve` through :func:`protocol_class`; it needs the
``httptools`` package (uvicorn's fast parser), which is a dependency of the server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import error_json

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def _raw_response(status: int, code: str, message: str) -> bytes:
    body = error_json(code, message)
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, _REASONS[status], len(body)) + body)


class HygienicHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with header timeout and size limit, a connection cap and JSON 400s."""

    header_timeout: float = 15.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._in_request = False  # between the first byte of a request and its complete headers
        self._refusal: tuple[int, str, str] | None = None
        self._refused = False

    # ------------------------------------------------------------ connection count and header timer
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            self._refused = True  # over the cap: closed before any work (connection_lost still runs)
            self.transport = transport
            transport.close()
            return
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or (self._busy() and not self._in_request):
            return  # a request is being answered; its next request gets a fresh timer
        if self._in_request:
            message = f"request headers not received within {self.header_timeout:g} s (setting header_timeout)"
            self.transport.write(_raw_response(408, "request_timeout", message))
        self.transport.close()

    def _busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._busy():  # not when a pipelined request started
            self._arm_header_timer()

    # ------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._in_request = True
        if self._header_timer is None:
            self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.max_header_bytes:
            self._refusal = (431, "headers_too_large", f"request line and headers exceed {self.max_header_bytes:,} "
                                                        "bytes (setting max_header_bytes)")
            raise ValueError("headers too large")  # the parser turns it into an error → send_400_response

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        self._in_request = False
        super().on_headers_complete()

    # ------------------------------------------------------------ uvicorn's own error answers
    def send_400_response(self, msg: str) -> None:
        status, code, message = self._refusal or (400, "bad_request", f"malformed HTTP request: {msg}")
        self._refusal = None
        self._cancel_header_timer()
        self.transport.write(_raw_response(status, code, message))
        self.transport.close()


def protocol_class(*, header_timeout: float, max_header_bytes: int, max_connections: int) -> type[HttpToolsProtocol]:
    """A :class:`HygienicHttpProtocol` subclass with these limits (uvicorn builds one protocol per connection)."""
    return type("VQSearchHttpProtocol", (HygienicHttpProtocol,), {
        "header_timeout": header_timeout, "max_header_bytes": max_header_bytes, "max_connections": max_connections})
