"""Wire formats of request and response bodies: JSON (orjson) and the binary vector formats.

JSON is parsed with orjson (about ten times faster than the standard library on vector
lists) and falls back to the standard library only for what orjson refuses but the API
has always accepted and answers with a precise error later: ``NaN``/``Infinity`` tokens
and integers beyond 64 bits.

Binary bodies (little-endian, documented in the OpenAPI description of the search route):

* ``application/x-vqsearch-f32`` (queries): ``uint32 rows, uint32 dim`` then ``rows × dim``
  float32 values, row-major.
* ``application/x-vqsearch-hits`` (results): ``uint32 queries, uint32 k`` then
  ``queries × k`` int64 ids, then ``queries × k`` float32 scores, row-major, best first;
  missing hits have id ``-1`` and score ``-inf`` (cosine/ip) or ``+inf`` (l2).
"""

from __future__ import annotations

import json
import struct
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from ..errors import DimensionMismatch, EmptyInput, InvalidInput
from .errors import MalformedJson

F32 = "application/x-vqsearch-f32"
HITS = "application/x-vqsearch-hits"
JSON = "application/json"
HEADER = struct.Struct("<II")

M = TypeVar("M", bound=BaseModel)


def media_type(request: Request) -> str:
    """The request's Content-Type without parameters, lower case ('' when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_json(ctype: str) -> bool:
    return ctype == JSON or ctype.endswith("+json")


def accepts(request: Request, media: str) -> bool:
    """True when the Accept header names ``media`` (exactly; wildcards mean JSON here)."""
    accept = request.headers.get("accept")
    if not accept:
        return False
    return any(part.split(";")[0].strip().lower() == media for part in accept.split(","))


def loads(raw: bytes) -> Any:
    """Parse JSON; raises :class:`MalformedJson` (400) with the parser's message."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:  # NaN/Infinity tokens and huge integers: valid for Python's parser, checked later with clear errors
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise MalformedJson(f"request body is not valid JSON: {exc}") from None


def validate(model: type[M], obj: Any) -> M:
    """Validate like FastAPI would: invalid fields → 422 ``validation_error`` with ``body.`` paths."""
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_context=False)]
        raise RequestValidationError(errors) from None


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def read_f32(raw: bytes, dim: int, max_rows: int, name: str) -> np.ndarray:
    """Decode an ``application/x-vqsearch-f32`` body into float32 (rows, dim) (a read-only view of ``raw``)."""
    if len(raw) < HEADER.size:
        raise InvalidInput(f"{F32} body needs an 8-byte header (uint32 rows, uint32 dim), got {len(raw)} bytes")
    rows, d = HEADER.unpack_from(raw)
    if d != dim:
        raise DimensionMismatch(f"collection '{name}' has dim {dim}, got {d}")
    if rows == 0:
        raise EmptyInput("no queries given")
    if rows > max_rows:
        raise InvalidInput(f"at most {max_rows} queries per request, got {rows}")
    expected = HEADER.size + rows * d * 4
    if len(raw) != expected:
        raise InvalidInput(f"{F32} body of {rows}×{d} float32 must be {expected} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype="<f4", offset=HEADER.size).reshape(rows, d).astype(np.float32, copy=False)


def write_f32(x: np.ndarray) -> bytes:
    """Encode float (rows, dim) as an ``application/x-vqsearch-f32`` body (for clients and tests)."""
    x = np.ascontiguousarray(x, dtype="<f4")
    return HEADER.pack(x.shape[0], x.shape[1]) + x.tobytes()


def write_hits(dist: np.ndarray, ids: np.ndarray) -> bytes:
    """Encode (distances, ids) of shape (nq, k) as an ``application/x-vqsearch-hits`` body."""
    nq, k = ids.shape
    return (HEADER.pack(nq, k) + np.ascontiguousarray(ids, dtype="<i8").tobytes()
            + np.ascontiguousarray(dist, dtype="<f4").tobytes())


def read_hits(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode an ``application/x-vqsearch-hits`` body → (distances float32, ids int64), each (nq, k)."""
    nq, k = HEADER.unpack_from(raw)
    n = nq * k
    ids = np.frombuffer(raw, dtype="<i8", count=n, offset=HEADER.size).reshape(nq, k)
    dist = np.frombuffer(raw, dtype="<f4", count=n, offset=HEADER.size + 8 * n).reshape(nq, k)
    return dist, ids
