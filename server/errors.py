"""HTTP error model: every failure is ``{"error": <stable code>, "message": <text>}``.

Library errors (:class:`vqsearch.VQSearchError`) carry their own ``code`` and
``http_status``; the server-only conditions below (auth, size limits, media types,
malformed JSON, deadlines) follow the same pattern.  Request validation errors become 422
``validation_error`` with the offending field paths in the message.  Anything else
is logged with its traceback and answered by a generic 500 that reveals nothing.

Two library errors change class at the HTTP edge: ``corrupt_data`` (a damaged file found
while serving) is the server's fault, so it is a 500 with its stable code (and counted in
``vqsearch_corrupt_data_total``), never a 4xx; and messages never carry absolute server
paths: the data directory, models directory and temporary directory are replaced by
``<data>``, ``<models>`` and ``<tmp>``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidInput, VQSearchError

LOG = logging.getLogger(__name__)


class Unauthorized(VQSearchError):
    """No valid bearer key was presented."""

    code = "unauthorized"
    http_status = 401


class Forbidden(VQSearchError):
    """The key is valid but does not allow this operation (a read-only key on a write)."""

    code = "forbidden"
    http_status = 403


class PayloadTooLarge(VQSearchError):
    """The request body exceeds the configured limit."""

    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaType(VQSearchError):
    """The request's Content-Type is not accepted by this endpoint."""

    code = "unsupported_media_type"
    http_status = 415


class TooManyRequests(VQSearchError):
    """A per-key concurrency or rate limit is exceeded."""

    code = "too_many_requests"
    http_status = 429


class RequestTimeout(VQSearchError):
    """The client sent the request body too slowly."""

    code = "request_timeout"
    http_status = 408


class TooExpensive(InvalidInput):
    """The request would cost more than a configured limit allows (checked before any work)."""

    code = "too_expensive"


class DeadlineExceeded(VQSearchError):
    """The request did not finish within the server's ``request_timeout``."""

    code = "deadline_exceeded"
    http_status = 504


class ClientClosedRequest(VQSearchError):
    """The client disconnected while its request waited (nginx's 499; the answer is never read)."""

    code = "client_closed_request"
    http_status = 499


class Overloaded(VQSearchError):
    """The server's search queue is full; retry later."""

    code = "overloaded"
    http_status = 503


class NotAcceptable(VQSearchError):
    """No representation the client accepts can be produced."""

    code = "not_acceptable"
    http_status = 406


#: Library error codes that are server-side faults whatever class the library gives them.
SERVER_FAULTS = {"corrupt_data": 500}


class MalformedJson(InvalidInput):
    """The body is not valid JSON."""

    code = "malformed_json"


class InvalidArrow(InvalidInput):
    """The body is not a valid Arrow IPC stream, or its schema does not fit the collection."""

    code = "invalid_arrow"


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
                 415: "unsupported_media_type", 422: "validation_error", 429: "too_many_requests"}


def error_body(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": message}


def error_json(code: str, message: str) -> bytes:
    return orjson.dumps(error_body(code, message))


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


class PathScrubber:
    """Replaces absolute server directories in messages by placeholders (longest first)."""

    def __init__(self, roots: Iterable[tuple[str, Path | str | None]]) -> None:
        pairs: list[tuple[str, str]] = []
        for label, root in roots:
            if root is None:
                continue
            for form in {str(root), os.path.realpath(root), os.path.abspath(root)}:
                if len(form) > 1:
                    pairs.append((form.rstrip("/"), label))
        self.pairs = sorted(set(pairs), key=lambda p: -len(p[0]))

    def __call__(self, message: str) -> str:
        for root, label in self.pairs:
            if root in message:
                message = message.replace(root, label)
        return message


def default_scrubber(data_dir: Path | None, models_dir: Path | None) -> PathScrubber:
    return PathScrubber([("<data>", data_dir), ("<models>", models_dir), ("<tmp>", tempfile.gettempdir())])


def _format_loc(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def validation_message(errors: Sequence[dict[str, Any]], limit: int = 5) -> str:
    """One readable line per problem: ``body.k: Input should be less than or equal to 10000``."""
    parts = [f"{_format_loc(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:limit]]
    more = len(errors) - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


def library_error(exc: VQSearchError, scrub: PathScrubber | None = None) -> tuple[int, str, str]:
    """(status, code, message) of a library error at the HTTP edge (see the module docstring)."""
    status = SERVER_FAULTS.get(exc.code, exc.http_status)
    message = exc.message or exc.code
    if scrub is not None:
        message = scrub(message)
    return status, exc.code, message


async def _vq_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VQSearchError)  # registered for this class only
    state = getattr(request.app.state, "vq", None)
    status, code, message = library_error(exc, None if state is None else state.scrub)
    if code in SERVER_FAULTS:
        LOG.error("%s in %s %s: %s", code, request.method, request.url.path, message)
        if state is not None:
            state.metrics.count_fault(code)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    retry = getattr(exc, "retry_after", None)
    if retry is not None:
        headers = {**(headers or {}), "Retry-After": str(retry)}
    return error_response(status, code, message, headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        err = next(e for e in errors if e.get("type") == "json_invalid")
        detail = (err.get("ctx") or {}).get("error", "JSON decode error")
        pos = err.get("loc", ("body", "?"))[-1]
        return error_response(400, MalformedJson.code, f"request body is not valid JSON: {detail} at position {pos}")
    return error_response(422, "validation_error", validation_message(errors))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    elif exc.status_code == 400 and message == "There was an error parsing the body":
        return error_response(400, MalformedJson.code, "request body could not be parsed")
    return error_response(exc.status_code, code, message, getattr(exc, "headers", None))


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    """The client closed the connection while its body was being read: nobody will read an answer."""
    return error_response(ClientClosedRequest.http_status, ClientClosedRequest.code,
                          "the client closed the connection before the request body was read")


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app`` (library, validation and HTTP errors)."""
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(VQSearchError, _vq_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


class CatchAllMiddleware:
    """Last line of defence: log an unexpected exception and answer a generic JSON 500.

    Pure ASGI (no BaseHTTPMiddleware), so streaming bodies pass through untouched.  If the
    response had already started, nothing can be sent any more; the error is only logged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            LOG.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not started:
                response = error_response(500, "internal_error", "internal server error (logged on the server)")
                await response(scope, receive, send)
