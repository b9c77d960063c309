"""Server settings: one typed, validated, immutable object built at the edge (CLI or environment).

Every field can be set from the environment as ``VQSEARCH_<FIELD>`` (upper case), e.g.
``VQSEARCH_DATA_DIR=/srv/vq``, ``VQSEARCH_API_KEYS=key1,key2`` (comma-separated lists).
Explicit keyword arguments (the CLI flags) win over the environment.  Validation fails
closed: a non-loopback bind address without an API key is refused, as are empty or
blank keys and a key that is both admin and read-only.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import InvalidInput

ENV_PREFIX = "VQSEARCH_"
MiB = 1 << 20


class InvalidSettings(InvalidInput):
    """The server settings (flags or ``VQSEARCH_*`` variables) are not valid."""

    code = "invalid_settings"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1); any other name is public."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseModel):
    """Everything the HTTP server needs; see the module docstring for the environment mapping."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Field(description="Directory holding one index per collection plus the collection registry.")
    host: str = Field("127.0.0.1", min_length=1, description="Bind address; loopback unless API keys are set.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port).")
    api_keys: tuple[str, ...] = Field((), description="Admin bearer keys (every endpoint).")
    read_only_keys: tuple[str, ...] = Field((), description="Read-only bearer keys (search, get, list, metrics).")
    search_threads: int = Field(0, ge=0, le=256,
                                description="Worker threads running batched searches (0 = one per core).")
    write_threads: int = Field(2, ge=1, le=64, description="Worker threads for writes (one writer per collection).")
    ingest_threads: int = Field(0, ge=0, le=256, description="Threads one write may use to encode vectors (0 = "
                                "all cores while no search runs, else half of them), so that ingest never takes "
                                "every core from searches.")
    batch_max_queries: int = Field(256, ge=1, le=65_536,
                                   description="Most query vectors in one batched index call (larger requests "
                                               "are split into chunks of this size).")
    batch_wait_ms: float = Field(0.0, ge=0, le=100, description="While a batch runs, how long a free worker "
                                 "waits for more compatible queries before starting a smaller batch (ms).")
    max_json_bytes: int = Field(16 * MiB, ge=1024, description="Largest accepted JSON request body.")
    max_arrow_bytes: int = Field(1024 * MiB, ge=1024, description="Largest accepted Arrow IPC stream body, counted "
                                 "on the wire and again decompressed.")
    max_hits: int = Field(100_000, ge=1, description="Most hits one search may return (queries × k).")
    max_candidates: int = Field(4_000_000, ge=1, description="Most scan candidates one search may keep "
                                "(queries × k × oversample).")
    max_include_cells: int = Field(1_000_000, ge=1, description="Most metadata values one search may return "
                                   "(queries × k × included columns).")
    max_response_bytes: int = Field(256 * MiB, ge=1024, description="Largest response body; a search whose "
                                    "answer grows beyond it fails (400 before the response starts).")
    max_queued_queries: int = Field(100_000, ge=1, description="Query vectors waiting for a search worker before "
                                    "new searches are refused with 503 overloaded.")
    request_timeout: float = Field(30.0, gt=0, le=3600, description="Deadline of a search or read (s): 504 "
                                   "deadline_exceeded when passed.")
    header_timeout: float = Field(15.0, gt=0, le=30, description="Time a client has to send a request's headers (s).")
    body_timeout: float = Field(30.0, gt=0, le=30, description="Longest pause while reading a request body, and "
                                "the grace period of the minimum body rate (s); 408 when exceeded.")
    min_body_rate: int = Field(64 * 1024, ge=1, description="After body_timeout seconds a body must have arrived at "
                               "this average rate (bytes/s) or the request gets 408.")
    max_header_bytes: int = Field(64 * 1024, ge=1024, le=16 * MiB,
                                  description="Largest request line + headers (431 above).")
    max_connections: int = Field(1024, ge=1, le=1_000_000, description="Open client connections; more are "
                                 "closed at once.")
    key_concurrency: int = Field(0, ge=0, description="Requests one API key may have in flight (0 = unlimited); "
                                 "429 above.")
    key_rate: float = Field(0.0, ge=0, description="Requests per second one API key may make, with bursts of "
                            "max(1, rate) (0 = unlimited); 429 with Retry-After above.")
    models_dir: Path | None = Field(None, description="Directory of compressed models served under /v1/models.")
    demo_debian: Path | None = Field(None, description="Load the shared Debian-MiniLM set as collection 'debian'.")
    log_level: str = Field("info", pattern="^(critical|error|warning|info|debug|trace)$")
    access_log: bool = Field(False, description="Log one line per request (uvicorn's access log); request counts "
                             "and latencies are always in /metrics.")

    @field_validator("api_keys", "read_only_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(k.strip() for k in v.split(",") if k.strip())
        return v

    @field_validator("api_keys", "read_only_keys")
    @classmethod
    def _check_keys(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for key in v:
            if not key or key != key.strip() or any(c.isspace() for c in key):
                raise ValueError("API keys must be non-empty and contain no whitespace")
            if len(key) < 8:
                raise ValueError("API keys must be at least 8 characters long")
            try:  # compared as UTF-8 bytes with the bytes of the Authorization header
                key.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("API keys must be valid UTF-8 text") from None
            if not key.isprintable():
                raise ValueError("API keys must not contain control characters")
        return tuple(dict.fromkeys(v))

    @model_validator(mode="after")
    def _fail_closed(self) -> Settings:
        if set(self.api_keys) & set(self.read_only_keys):
            raise ValueError("a key cannot be both an admin key and a read-only key")
        if not is_loopback(self.host) and not self.auth_enabled:
            raise ValueError(f"refusing to bind non-loopback host {self.host!r} without an API key "
                             f"(pass --api-key or set {ENV_PREFIX}API_KEYS)")
        return self

    @property
    def search_workers(self) -> int:
        """Threads of the search batcher: ``search_threads``, or one per core."""
        return self.search_threads or (os.cpu_count() or 1)

    @property
    def ingest_workers(self) -> int:
        """Encoding threads of one write: ``ingest_threads``, or half the cores (at least 1)."""
        return self.ingest_threads or max(1, (os.cpu_count() or 1) // 2)

    @property
    def auth_enabled(self) -> bool:
        """Once any key is configured, every /v1 request (and /metrics) needs one."""
        return bool(self.api_keys or self.read_only_keys)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``VQSEARCH_*`` variables, then ``overrides`` (``None`` values are ignored).

        Raises :class:`InvalidSettings` with every problem in one message.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None and v != ()})
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
                                 for e in exc.errors())
            raise InvalidSettings(f"invalid server settings: {problems}") from None
