"""Store configuration: the physical layout (:class:`Layout`), creation settings
(:class:`StoreConfig`) and the retention/compaction policy (:class:`StorePolicy`)."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from ..errors import CorruptData, InvalidInput

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
EXTRA_DTYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                          "float16", "float32", "float64"})  # no bool: Arrow bit-packs it (no zero-copy view)
VECTOR_DTYPES = (None, "float16")
MAX_CODE_SIZE = 1 << 20
MAX_DIM = 1 << 20


_NUMPY_OF_ARROW = {str(pa.from_numpy_dtype(np.dtype(n))): np.dtype(n) for n in
                   ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                    "float16", "float32", "float64")}


def numpy_dtype(t: pa.DataType) -> np.dtype:
    """numpy dtype of a fixed-width numeric Arrow type (without ``to_pandas_dtype``, which imports pandas)."""
    try:
        return _NUMPY_OF_ARROW[str(t)]
    except KeyError:
        raise TypeError(f"no numpy dtype for Arrow type {t}") from None


def check_name(name: object, what: str) -> str:
    """Validate a code/extra column name (identifier-like, at most 64 characters)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidInput(f"{what} name {name!r} is not valid (letters, digits, '_', '.', '-'; "
                           "at most 64 characters, not starting with a digit)")
    return name


@dataclass(frozen=True)
class StorePolicy:
    """Retention and compaction knobs (persisted in the manifest, overridable at open).

    Parameters
    ----------
    keep_versions
        Manifests kept for time travel (default 10, >= 1).  Files referenced only by
        older manifests are deleted at the next commit.  More versions mean more
        disk held by superseded segments.
    auto_compact
        Merge small segments and rewrite segments with many deleted rows after each
        write (default True).  Turn off only for bulk loads followed by ``compact()``.
    target_segment_bytes
        Largest segment written (default 256 MiB).  Writes and compactions split their
        output at this size; segments of at least half of it are never merged.
        Bigger segments mean fewer files but more memory during compaction.
    merge_fanout
        Size-tiered merging (default 8, >= 2): segments are grouped into tiers
        ``floor(log_fanout(size / 4 KiB))``; a tier holding ``merge_fanout`` segments is
        merged (with all lower tiers) into one.  This bounds partial segments to about
        ``(fanout - 1) * log_fanout(target / 4 KiB)`` while each row is rewritten only
        about once per tier.
    max_deleted_fraction
        A segment whose deleted fraction exceeds this (default 0.2, in (0, 1]) is
        rewritten without its dead rows.
    """

    keep_versions: int = 10
    auto_compact: bool = True
    target_segment_bytes: int = 256 << 20
    merge_fanout: int = 8
    max_deleted_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not isinstance(self.keep_versions, int) or self.keep_versions < 1:
            raise InvalidInput(f"keep_versions must be an int >= 1, got {self.keep_versions!r}")
        if not isinstance(self.auto_compact, bool):
            raise InvalidInput(f"auto_compact must be a bool, got {self.auto_compact!r}")
        if not isinstance(self.target_segment_bytes, int) or self.target_segment_bytes < 4096:
            raise InvalidInput(f"target_segment_bytes must be an int >= 4096, got {self.target_segment_bytes!r}")
        if not isinstance(self.merge_fanout, int) or self.merge_fanout < 2:
            raise InvalidInput(f"merge_fanout must be an int >= 2, got {self.merge_fanout!r}")
        frac = self.max_deleted_fraction
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 < frac <= 1.0:
            raise InvalidInput(f"max_deleted_fraction must be in (0, 1], got {frac!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: object, *, source: str) -> StorePolicy:
        if not isinstance(obj, dict):
            raise CorruptData(f"{source}: policy is not an object")
        try:
            return cls(**obj)
        except (TypeError, InvalidInput) as exc:
            raise CorruptData(f"{source}: invalid policy: {exc}") from None


@dataclass(frozen=True)
class Layout:
    """Physical schema shared by all segments of a store version.

    ``extra_columns`` and ``metadata_schema`` are ``None`` until declared (by the
    config or by the first write that carries them).  Every write must then match the
    extra columns; the metadata schema only grows (writes may add columns or omit some,
    see :mod:`vqsearch.storage.schema`).
    """

    dim: int
    vector_dtype: str | None
    code_columns: dict[str, int]
    extra_columns: dict[str, str] | None = None
    metadata_schema: pa.Schema | None = None
    #: Extra column whose value orders the rows inside every segment (e.g. IVF list ids), so that
    #: rows sharing a value are contiguous.  Writes and compaction sort by it (stable).
    cluster_by: str | None = None

    @property
    def has_vectors(self) -> bool:
        return self.vector_dtype is not None

    def row_bytes(self) -> int:
        """Fixed bytes per row (ids, id order, codes, vectors, extras), metadata excluded."""
        n = 8 + 4 + sum(self.code_columns.values())
        if self.vector_dtype is not None:
            n += self.dim * np.dtype(self.vector_dtype).itemsize
        for dt in (self.extra_columns or {}).values():
            n += np.dtype(dt).itemsize
        return n

    def to_json(self) -> dict[str, Any]:
        schema = None
        if self.metadata_schema is not None:
            schema = base64.b64encode(self.metadata_schema.serialize().to_pybytes()).decode()
        # Name/size pairs as lists: column order is part of the segment schema and JSON
        # objects are written with sorted keys.
        extras = None if self.extra_columns is None else [[k, v] for k, v in self.extra_columns.items()]
        return {"dim": self.dim, "vector_dtype": self.vector_dtype,
                "code_columns": [[k, v] for k, v in self.code_columns.items()],
                "extra_columns": extras, "metadata_schema": schema, "cluster_by": self.cluster_by}

    @classmethod
    def from_json(cls, obj: object, *, source: str) -> Layout:
        """Parse and validate a layout read from disk (nothing trusted)."""
        if not isinstance(obj, dict):
            raise CorruptData(f"{source}: layout is not an object")
        try:
            extras = obj["extra_columns"]
            return cls.validated(dim=obj["dim"], vector_dtype=obj["vector_dtype"],
                                 code_columns=_pairs(obj["code_columns"]),
                                 extra_columns=None if extras is None else _pairs(extras),
                                 metadata_schema=_schema_from_b64(obj["metadata_schema"]),
                                 cluster_by=obj.get("cluster_by"))
        except (KeyError, TypeError, ValueError, pa.ArrowException) as exc:
            raise CorruptData(f"{source}: invalid layout: {exc}") from None

    @classmethod
    def validated(cls, *, dim: object, vector_dtype: object, code_columns: object,
                  extra_columns: object = None, metadata_schema: pa.Schema | None = None,
                  cluster_by: object = None) -> Layout:
        """Build a layout, raising ``InvalidInput`` on any bad value."""
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= int(dim) <= MAX_DIM:
            raise InvalidInput(f"dim must be an int in [1, {MAX_DIM}], got {dim!r}")
        if vector_dtype not in VECTOR_DTYPES:
            raise InvalidInput(f"vector_dtype must be one of {VECTOR_DTYPES}, got {vector_dtype!r}")
        if not isinstance(code_columns, Mapping):
            raise InvalidInput(f"code_columns must be a mapping name -> code_size, got {type(code_columns).__name__}")
        codes: dict[str, int] = {}
        for name, size in code_columns.items():
            check_name(name, "code column")
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= MAX_CODE_SIZE:
                raise InvalidInput(f"code column {name!r}: code_size must be an int in [1, {MAX_CODE_SIZE}], "
                                   f"got {size!r}")
            codes[name] = int(size)
        extras: dict[str, str] | None = None
        if extra_columns is not None:
            if not isinstance(extra_columns, Mapping):
                raise InvalidInput("extra_columns must be a mapping name -> numpy dtype name")
            extras = {}
            for name, dt in extra_columns.items():
                check_name(name, "extra column")
                try:
                    dt_name = None if dt is None else np.dtype(dt).name
                except TypeError:
                    dt_name = None
                if dt_name not in EXTRA_DTYPES:
                    raise InvalidInput(f"extra column {name!r}: dtype {dt!r} is not one of {sorted(EXTRA_DTYPES)}")
                extras[name] = dt_name
        if metadata_schema is not None and not isinstance(metadata_schema, pa.Schema):
            raise InvalidInput("metadata_schema must be a pyarrow.Schema")
        if cluster_by is not None and (extras is None or cluster_by not in extras):
            raise InvalidInput(f"cluster_by={cluster_by!r} must name a declared extra column")
        return cls(dim=int(dim), vector_dtype=vector_dtype, code_columns=codes, extra_columns=extras,
                   metadata_schema=metadata_schema, cluster_by=cluster_by)


def _pairs(obj: object) -> dict:
    if not isinstance(obj, list) or not all(isinstance(p, list) and len(p) == 2 for p in obj):
        raise ValueError("expected a list of [name, value] pairs")
    out = dict(obj)
    if len(out) != len(obj):
        raise ValueError("duplicate column names")
    return out


def _schema_from_b64(text: object) -> pa.Schema | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError("metadata_schema is not a string")
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text, validate=True)))


@dataclass
class StoreConfig:
    """Everything :meth:`Store.create` needs; the store treats ``blobs`` and ``config`` as opaque.

    Parameters
    ----------
    code_columns
        Name -> code size in bytes of every fixed-width code column (e.g.
        ``{"scan": 56, "rescore": 96}``); may be empty when only vectors are kept.
    dim
        Vector dimension ``d``; recorded for validation even without stored vectors.
    vector_dtype
        ``"float16"`` to store raw vectors (for exact rescoring), ``None`` for none.
    blobs
        Name -> opaque bytes (fitted quantiser states); stored once as
        ``quantizers/<sha256>.bin`` and referenced by hash from each manifest.
    config
        Opaque JSON-serialisable index settings, stored in the manifest.
    extra_columns
        Optional name -> dtype of small per-row numeric columns (IVF list ids, norms);
        if ``None`` they are declared by the first write.
    metadata_schema
        Optional user metadata schema; if ``None`` it is declared by the first write
        that carries metadata.  Later writes may append columns.
    codecs
        Optional free-form label per code column (e.g. ``"pq:m=56 codec 3 v1"``),
        written into each segment's schema metadata for offline inspection.
    policy
        Retention and compaction policy.
    """

    code_columns: Mapping[str, int]
    dim: int
    vector_dtype: Literal["float16"] | None = None
    blobs: Mapping[str, bytes] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    extra_columns: Mapping[str, str] | None = None
    metadata_schema: pa.Schema | None = None
    codecs: Mapping[str, str] = field(default_factory=dict)
    policy: StorePolicy = field(default_factory=StorePolicy)
    cluster_by: str | None = None

    def layout(self) -> Layout:
        from .schema import normalize_schema

        schema = None if self.metadata_schema is None else normalize_schema(self.metadata_schema)
        return Layout.validated(dim=self.dim, vector_dtype=self.vector_dtype, code_columns=self.code_columns,
                                extra_columns=self.extra_columns, metadata_schema=schema,
                                cluster_by=self.cluster_by)
