"""Typed errors for vqsearch.

Every error derives from :class:`VQSearchError` and from the builtin exception a
Python user would expect (``ValueError`` for bad values, ``KeyError`` for unknown
ids, ...), so both ``except VQSearchError`` and ``except ValueError`` work.  Each
class carries a stable machine-readable ``code`` and the HTTP status the server
maps it to.  Errors take a single message argument, so they pickle.
"""

from __future__ import annotations


class VQSearchError(Exception):
    """Base of all vqsearch errors."""

    code: str = "error"
    http_status: int = 400

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.message


class InvalidInput(VQSearchError, ValueError):
    """Input data is malformed (wrong shape, dtype, range ...)."""

    code = "invalid_input"
    http_status = 400


class DimensionMismatch(InvalidInput):
    """Vectors do not have the dimension the quantiser or index was built for."""

    code = "dimension_mismatch"


class NonFiniteInput(InvalidInput):
    """Input contains NaN or infinity."""

    code = "non_finite"


class EmptyInput(InvalidInput):
    """An operation that needs data received an empty batch."""

    code = "empty_input"


class InvalidCodes(InvalidInput):
    """Codes have the wrong dtype or width for the quantiser decoding them."""

    code = "invalid_codes"


class InvalidSpec(VQSearchError, ValueError):
    """A quantiser spec string or parameter is not valid."""

    code = "invalid_spec"


class UnknownQuantizer(InvalidSpec, KeyError):
    """No quantiser is registered under the requested name or codec id."""

    code = "unknown_quantizer"


class NotFitted(VQSearchError, RuntimeError):
    """A trained quantiser was used before ``fit``."""

    code = "not_fitted"
    http_status = 409


class CorruptData(VQSearchError, ValueError):
    """Serialised state or an on-disk file failed validation (magic, size, checksum)."""

    code = "corrupt_data"
    http_status = 422


class UnknownIds(VQSearchError, KeyError):
    """Ids that are not in the index were requested."""

    code = "unknown_ids"
    http_status = 404


class NotFound(VQSearchError, FileNotFoundError):
    """A named resource (index, collection, model, tensor) does not exist."""

    code = "not_found"
    http_status = 404


class AlreadyExists(VQSearchError, FileExistsError):
    """A resource with that name already exists."""

    code = "already_exists"
    http_status = 409


class Conflict(VQSearchError, RuntimeError):
    """The operation conflicts with the current state (e.g. another writer holds the lock)."""

    code = "conflict"
    http_status = 409


class MissingDependency(VQSearchError, ImportError):
    """An optional dependency (e.g. the ``models`` extra) is not installed."""

    code = "missing_dependency"
    http_status = 400


class Unauthorized(VQSearchError, PermissionError):
    """No valid API key was presented (HTTP 401)."""

    code = "unauthorized"
    http_status = 401


class Forbidden(VQSearchError, PermissionError):
    """The API key is valid but does not allow this operation, e.g. a read-only key on a write (HTTP 403)."""

    code = "forbidden"
    http_status = 403


class ServiceUnavailable(VQSearchError, RuntimeError):
    """A server could not do the work now (overloaded, rate-limited, deadline, or a damaged collection);
    the client raises it for 429, 503 and 504 answers.  ``retry_after`` is the server's hint in seconds."""

    code = "unavailable"
    http_status = 503
    retry_after: float | None = None


class ServerError(VQSearchError, RuntimeError):
    """A server failed on a request (HTTP 5xx): its fault, not the request's."""

    code = "internal_error"
    http_status = 500


class ConnectionFailed(VQSearchError, ConnectionError):
    """The server could not be reached (or the connection broke), after the client's retries."""

    code = "connection_failed"
    http_status = 503


__all__ = [
    "VQSearchError",
    "InvalidInput",
    "DimensionMismatch",
    "NonFiniteInput",
    "EmptyInput",
    "InvalidCodes",
    "InvalidSpec",
    "UnknownQuantizer",
    "NotFitted",
    "CorruptData",
    "UnknownIds",
    "NotFound",
    "AlreadyExists",
    "Conflict",
    "MissingDependency",
    "Unauthorized",
    "Forbidden",
    "ServiceUnavailable",
    "ServerError",
    "ConnectionFailed",
]
