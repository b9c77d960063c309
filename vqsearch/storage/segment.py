"""Segments: immutable Arrow IPC files, memory-mapped and viewed as numpy without copies.

One segment file holds one record batch (so every fixed-width column is one
contiguous buffer) with the columns::

    id            uint64                            row ids, unique within the segment
    _id_order     uint32                            argsort of id (binary search without a copy)
    code:<name>   fixed_size_list<uint8>[code_size] opaque quantiser codes, one per code column
    vector        fixed_size_list<halffloat>[dim]   optional raw vectors
    extra:<name>  primitive numeric                 small per-row columns for the index (IVF list ...)
    meta:<name>   any Arrow type                    user metadata: the columns the write carried

A segment holds any subset of the version's metadata columns (format version 2; in
version 1 it held all or none): columns declared after it was written, or omitted by
its write, read as null.  The schema metadata key ``vqsearch`` holds a JSON description (format version,
rows, dim, code sizes and codec labels, blob hashes) that is checked against the
manifest on open.  Opening is O(schema): ``pa.memory_map`` + footer + batch
header, validated structurally (types, row count, null counts, buffer sizes).
Content is protected by a CRC-32 per column recorded in the manifest and verified
lazily, the first time a column is used, so untouched columns (e.g. float16
vectors used only for rescoring) are never faulted in.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from ..errors import CorruptData, InvalidInput
from ._fsutil import crc32_buffers
from .config import Layout, numpy_dtype
from .manifest import SEGMENT_DIR, SegmentEntry

SEGMENT_FORMAT = "vqsearch.segment"
SEGMENT_FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_META_KEY = b"vqsearch"
_ARROW_ERRORS = (pa.ArrowException, OSError, ValueError, TypeError, IndexError)


def code_field(name: str) -> str:
    return f"code:{name}"


def extra_field(name: str) -> str:
    return f"extra:{name}"


def meta_field(name: str) -> str:
    return f"meta:{name}"


def expected_schema(layout: Layout, metadata: pa.Schema | None = None) -> pa.Schema:
    """The exact Arrow schema (without schema metadata) of a segment under ``layout``.

    ``metadata``: the user metadata columns the segment holds (a subset of the layout's,
    in the layout's order; ``None`` = none).
    """
    fields = [pa.field("id", pa.uint64(), nullable=False), pa.field("_id_order", pa.uint32(), nullable=False)]
    for name, size in layout.code_columns.items():
        fields.append(pa.field(code_field(name), pa.list_(pa.uint8(), size), nullable=False))
    if layout.vector_dtype is not None:
        fields.append(pa.field("vector", pa.list_(pa.from_numpy_dtype(np.dtype(layout.vector_dtype)), layout.dim),
                               nullable=False))
    for name, dt in (layout.extra_columns or {}).items():
        fields.append(pa.field(extra_field(name), pa.from_numpy_dtype(np.dtype(dt)), nullable=False))
    for f in metadata or ():
        fields.append(pa.field(meta_field(f.name), f.type, nullable=True))
    return pa.schema(fields)


def _fixed_list(values: np.ndarray, width: int) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width)


def take_rows(order: np.ndarray, ids: np.ndarray, columns: dict, vectors: np.ndarray | None, extra: dict,
              metadata: pa.Table | None) -> tuple:
    """The rows of a segment-to-be in the given order (used to keep rows clustered by a key column)."""
    return (ids[order], {k: v[order] for k, v in columns.items()}, None if vectors is None else vectors[order],
            {k: v[order] for k, v in extra.items()}, None if metadata is None else metadata.take(pa.array(order)))


def write_segment(root: Path, *, layout: Layout, version: int, ids: np.ndarray,
                  columns: Mapping[str, np.ndarray], vectors: np.ndarray | None,
                  extra: Mapping[str, np.ndarray], metadata: pa.Table | None,
                  codecs: Mapping[str, str], blob_hashes: Mapping[str, str]) -> Segment:
    """Write one segment file, fsync it, read it back and return it (entry with checksums).

    Inputs must already be validated against ``layout``; ``metadata`` holds a subset of
    the declared columns with their declared types.  The directory entry is *not* fsync'd here: the caller fsyncs
    ``segments/`` once per commit, before publishing the manifest.
    """
    n = int(ids.shape[0])
    if not 0 < n < (1 << 32):
        raise InvalidInput(f"a segment holds between 1 and 2**32 - 1 rows, got {n}")
    order = np.argsort(ids, kind="stable").astype(np.uint32)
    arrays: list[pa.Array] = [pa.array(ids, type=pa.uint64()), pa.array(order, type=pa.uint32())]
    for name, size in layout.code_columns.items():
        arrays.append(_fixed_list(columns[name], size))
    if layout.vector_dtype is not None:
        arrays.append(_fixed_list(vectors, layout.dim))
    for name in layout.extra_columns or {}:
        arrays.append(pa.array(extra[name]))
    if metadata is not None:
        for name in metadata.column_names:
            arrays.append(metadata.column(name).combine_chunks())
    desc = {
        "format": SEGMENT_FORMAT, "format_version": SEGMENT_FORMAT_VERSION, "rows": n, "dim": layout.dim,
        "vector_dtype": layout.vector_dtype,
        "code_columns": {name: {"code_size": size, "codec": codecs.get(name), "blob": blob_hashes.get(name)}
                         for name, size in layout.code_columns.items()},
        "extra_columns": dict(layout.extra_columns or {}),
        "created_version": version,
    }
    meta_schema = None if metadata is None else metadata.schema
    schema = expected_schema(layout, meta_schema).with_metadata({_META_KEY: json.dumps(desc).encode()})
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    rel = f"{SEGMENT_DIR}/{uuid.uuid4().hex}.arrow"
    path = Path(root) / rel
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, schema) as writer:
        writer.write_batch(batch)
    _fsync_file(path)
    entry = SegmentEntry(file=rel, rows=n, size=path.stat().st_size, min_id=int(ids.min()), max_id=int(ids.max()),
                         checksums={}, created=version)
    seg = Segment(root, entry, layout, _trust_checksums=True)
    entry = SegmentEntry(**{**entry.__dict__, "checksums": seg.compute_checksums()})
    return Segment(root, entry, layout, _trust_checksums=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Segment:
    """A read-only, memory-mapped segment; numpy views are zero-copy and read-only.

    Raises :class:`~vqsearch.errors.CorruptData` naming the file when it is missing,
    truncated, structurally invalid, inconsistent with the manifest, or (at first use
    of a column) fails its checksum.
    """

    def __init__(self, root: Path, entry: SegmentEntry, layout: Layout, *, _trust_checksums: bool = False) -> None:
        self.entry = entry
        self.file = entry.file
        self.path = Path(root) / entry.file
        self.layout = layout
        self._verified: set[str] = set()
        self._trust = _trust_checksums  # only for a file this process has just written
        self._lock = threading.Lock()
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            raise CorruptData(f"segment {self.path} is missing") from None
        if size != entry.size:
            raise CorruptData(f"segment {self.path} has {size} bytes, the manifest records {entry.size} "
                              "(truncated or replaced)")
        try:
            self._mmap = pa.memory_map(str(self.path), "r")
            reader = ipc.open_file(self._mmap)
            if reader.num_record_batches != 1:
                raise ValueError(f"{reader.num_record_batches} record batches, expected 1")
            batch = reader.get_batch(0)
            batch.validate()  # structural: buffer counts and sizes, offsets; no data scan
        except _ARROW_ERRORS as exc:
            raise CorruptData(f"segment {self.path} is not a valid Arrow IPC segment: {exc}") from None
        self._batch = batch
        self._check_structure()

    # ------------------------------------------------------------ validation
    def _fail(self, why: str) -> CorruptData:
        return CorruptData(f"segment {self.path}: {why}")

    def _check_structure(self) -> None:
        batch, layout, entry = self._batch, self.layout, self.entry
        schema = batch.schema
        try:
            desc = json.loads((schema.metadata or {}).get(_META_KEY, b"null"))
        except (ValueError, UnicodeDecodeError):
            desc = None
        if not isinstance(desc, dict) or desc.get("format") != SEGMENT_FORMAT:
            raise self._fail("schema metadata is missing or not a vqsearch segment description")
        if desc.get("format_version") not in _READABLE_VERSIONS:
            raise self._fail(f"unsupported segment format_version {desc.get('format_version')!r}")
        if desc.get("rows") != entry.rows or batch.num_rows != entry.rows:
            raise self._fail(f"has {batch.num_rows} rows (header says {desc.get('rows')!r}), "
                             f"the manifest records {entry.rows}")
        if desc.get("dim") != layout.dim or desc.get("vector_dtype") != layout.vector_dtype:
            raise self._fail(f"dim/vector dtype {desc.get('dim')}/{desc.get('vector_dtype')} do not match the "
                             f"index ({layout.dim}/{layout.vector_dtype})")
        codes = desc.get("code_columns")
        if not isinstance(codes, dict) or {k: (v or {}).get("code_size") for k, v in codes.items()
                                           if isinstance(v, dict)} != layout.code_columns:
            raise self._fail(f"code columns {codes!r} do not match the index {layout.code_columns}")
        meta = self._metadata_fields(schema)
        plain = schema.remove_metadata()
        want = expected_schema(layout, meta)
        if not plain.equals(want):
            raise self._fail(f"schema does not match the index layout:\n{plain}\nexpected:\n{want}")
        for i, field in enumerate(schema):
            if field.name.startswith("meta:"):
                continue
            col = batch.column(i)
            if col.null_count != 0 or col.offset != 0:
                raise self._fail(f"column {field.name!r} has nulls or an offset")
            values = col.values if pa.types.is_fixed_size_list(field.type) else col
            if values.null_count != 0 or values.offset != 0:
                raise self._fail(f"column {field.name!r} has nulls or an offset in its values")
            width = values.type.bit_width // 8
            if values.buffers()[1].address % width:  # IPC aligns buffers; numpy views must be aligned
                raise self._fail(f"column {field.name!r} is not {width}-byte aligned")
        self.metadata_columns = frozenset(meta.names)

    def _metadata_fields(self, schema: pa.Schema) -> pa.Schema:
        """The segment's user metadata fields, checked against the layout (declared name and type)."""
        declared = self.layout.metadata_schema
        fields = []
        for f in schema:
            if not f.name.startswith("meta:"):
                continue
            name = f.name[len("meta:"):]
            if declared is None or declared.get_field_index(name) < 0:
                raise self._fail(f"metadata column {name!r} is not declared by the index")
            if declared.field(name).type != f.type:
                raise self._fail(f"metadata column {name!r} has type {f.type}, the index declares "
                                 f"{declared.field(name).type}")
            fields.append(declared.field(name))
        order = {n: i for i, n in enumerate(declared.names)} if declared is not None else {}
        if [order[f.name] for f in fields] != sorted(order[f.name] for f in fields):
            raise self._fail("metadata columns are not in the index's declared order")
        return pa.schema(fields)

    def compute_checksums(self) -> dict[str, int]:
        """CRC-32 of every column (reads the whole file)."""
        return {name: self._crc(name) for name in self._batch.schema.names}

    def _crc(self, name: str) -> int:
        col = self._batch.column(name)
        if name.startswith("meta:"):
            return crc32_buffers(col.buffers())
        return crc32_buffers([self._raw_view(name)])

    def _verify(self, name: str) -> None:
        if name in self._verified or self._trust:
            return
        with self._lock:
            if name in self._verified:
                return
            expected = self.entry.checksums.get(name)
            if expected is None:
                raise self._fail(f"the manifest has no checksum for column {name!r}")
            got = self._crc(name)
            if got != expected:
                raise self._fail(f"checksum mismatch in column {name!r} (crc32 {got:#010x}, manifest "
                                 f"{expected:#010x}): the file is corrupted")
            if name == "_id_order":
                self._check_order()
            self._verified.add(name)

    def _check_order(self) -> None:
        order = self._raw_view("_id_order")
        n = self.entry.rows
        if order.size and int(order.max()) >= n:
            raise self._fail("_id_order holds an out-of-range row")
        ids = self.ids
        sorted_ids = ids[order]
        if n > 1 and not bool(np.all(sorted_ids[1:] > sorted_ids[:-1])):
            raise self._fail("ids are not unique (or _id_order is not their sort order)")
        if n and (int(sorted_ids[0]) != self.entry.min_id or int(sorted_ids[-1]) != self.entry.max_id):
            raise self._fail("id range does not match the manifest")

    def verify_all(self) -> None:
        """Verify every column's checksum now (O(file size))."""
        self._trust = False
        for name in self._batch.schema.names:
            self._verify(name)

    @property
    def verified_columns(self) -> frozenset[str]:
        return frozenset(self._verified)

    # ------------------------------------------------------------ views
    def _raw_view(self, name: str) -> np.ndarray:
        col = self._batch.column(name)
        n = self.entry.rows
        if pa.types.is_fixed_size_list(col.type):
            width = col.type.list_size
            values = col.values
            dtype = numpy_dtype(values.type)
            buf = values.buffers()[1]
            arr = np.frombuffer(buf, dtype=dtype, count=n * width)
            return arr.reshape(n, width)
        dtype = numpy_dtype(col.type)
        return np.frombuffer(col.buffers()[1], dtype=dtype, count=n)

    @property
    def num_rows(self) -> int:
        return self.entry.rows

    @property
    def ids(self) -> np.ndarray:
        """uint64 (n,) ids, memory-mapped."""
        self._verify("id")
        return self._raw_view("id")

    @property
    def id_order(self) -> np.ndarray:
        """uint32 (n,) permutation sorting ``ids``."""
        self._verify("id")
        self._verify("_id_order")
        return self._raw_view("_id_order")

    def column(self, name: str) -> np.ndarray:
        """uint8 (n, code_size) codes of one code column, memory-mapped."""
        if name not in self.layout.code_columns:
            raise InvalidInput(f"unknown code column {name!r}; columns: {list(self.layout.code_columns)}")
        self._verify(code_field(name))
        return self._raw_view(code_field(name))

    @property
    def vectors(self) -> np.ndarray | None:
        """float16 (n, dim) vectors, memory-mapped, or None if the index stores none."""
        if self.layout.vector_dtype is None:
            return None
        self._verify("vector")
        return self._raw_view("vector")

    def extra(self, name: str) -> np.ndarray:
        """One per-row extra column (n,), memory-mapped."""
        if name not in (self.layout.extra_columns or {}):
            raise InvalidInput(f"unknown extra column {name!r}; columns: {list(self.layout.extra_columns or {})}")
        self._verify(extra_field(name))
        return self._raw_view(extra_field(name))

    def metadata_table(self, schema: pa.Schema | None, columns: list[str] | None = None) -> pa.Table:
        """User metadata as a Table with the declared ``schema`` (null where the segment lacks a column).

        Zero-copy over the memory map; ``schema`` comes from the reading version's layout,
        since a segment may predate columns declared later.  ``columns`` selects (and orders)
        the columns returned; only those are read and checksummed.
        """
        n = self.entry.rows
        if schema is None:
            return pa.Table.from_batches([self._batch.select([])])
        names = schema.names if columns is None else columns
        cols, fields = [], []
        for name in names:
            f = schema.field(name)
            if name in self.metadata_columns:
                self._verify(meta_field(name))
                cols.append(self._batch.column(meta_field(name)))
            else:
                cols.append(pa.nulls(n, f.type))
            fields.append(f)
        if not cols:
            return pa.Table.from_batches([self._batch.select([])])
        return pa.Table.from_arrays(cols, schema=pa.schema(fields))
