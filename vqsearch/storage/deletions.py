"""Deletion files (tombstones): the dead row positions of one segment.

A deletion file is an Arrow IPC file with one ``uint32`` column ``row`` (sorted,
unique, < the segment's row count) and, for inspection, the deleted ``id``s.
Deletion files are cumulative and immutable: a delete or upsert that hits a
segment writes a new file holding the old positions plus the new ones, and the
next manifest points the segment at it (older versions keep pointing at the old
file).  Compaction drops a segment's dead rows and its deletion file.  Because
deletions are positional, applying them at snapshot time is a bitmap fill, with
no id lookups on the read path.
"""

from __future__ import annotations

import json
import uuid
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from ..errors import CorruptData
from .manifest import DELETION_DIR, DeletionEntry, SegmentEntry
from .segment import _fsync_file

_KEY = b"vqsearch"
_ERRORS = (pa.ArrowException, OSError, ValueError, TypeError)


def write_deletion(root: Path, rows: np.ndarray, ids: np.ndarray, segment: SegmentEntry) -> DeletionEntry:
    """Write and fsync a deletion file for ``segment`` (``rows`` sorted, unique uint32)."""
    rows = np.ascontiguousarray(rows, dtype=np.uint32)
    desc = json.dumps({"segment": segment.file, "segment_rows": segment.rows, "count": int(rows.size)}).encode()
    schema = pa.schema([pa.field("row", pa.uint32(), nullable=False), pa.field("id", pa.uint64(), nullable=False)],
                       metadata={_KEY: desc})
    batch = pa.RecordBatch.from_arrays([pa.array(rows), pa.array(np.asarray(ids, dtype=np.uint64))], schema=schema)
    rel = f"{DELETION_DIR}/{uuid.uuid4().hex}.arrow"
    path = Path(root) / rel
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, schema) as writer:
        writer.write_batch(batch)
    _fsync_file(path)
    return DeletionEntry(file=rel, count=int(rows.size), size=path.stat().st_size, crc=zlib.crc32(rows))


class DeletionVector:
    """A memory-mapped deletion file; ``rows`` is validated and checksummed on first use."""

    def __init__(self, root: Path, entry: DeletionEntry, segment: SegmentEntry) -> None:
        self.entry = entry
        self.path = Path(root) / entry.file
        self._segment = segment
        self._rows: np.ndarray | None = None
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            raise CorruptData(f"deletion file {self.path} is missing") from None
        if size != entry.size:
            raise CorruptData(f"deletion file {self.path} has {size} bytes, the manifest records {entry.size}")
        try:
            reader = ipc.open_file(pa.memory_map(str(self.path), "r"))
            if reader.num_record_batches != 1:
                raise ValueError(f"{reader.num_record_batches} record batches, expected 1")
            batch = reader.get_batch(0)
            batch.validate()
            desc = json.loads(batch.schema.metadata[_KEY])
        except (*_ERRORS, KeyError) as exc:
            raise CorruptData(f"deletion file {self.path} is not valid: {exc}") from None
        col = batch.column(0) if batch.num_columns else None
        if (batch.schema.names[:1] != ["row"] or col is None or col.type != pa.uint32() or col.null_count
                or col.offset or batch.num_rows != entry.count or not isinstance(desc, dict)
                or desc.get("segment") != segment.file or desc.get("segment_rows") != segment.rows):
            raise CorruptData(f"deletion file {self.path} does not match segment {segment.file} "
                              f"({entry.count} rows expected)")
        self._col = col

    @property
    def rows(self) -> np.ndarray:
        """Sorted unique uint32 dead row positions (verified on first access)."""
        if self._rows is None:
            rows = np.frombuffer(self._col.buffers()[1], dtype=np.uint32, count=self.entry.count)
            if zlib.crc32(rows) != self.entry.crc:
                raise CorruptData(f"deletion file {self.path}: checksum mismatch (the file is corrupted)")
            if rows.size and (int(rows[-1]) >= self._segment.rows or not bool(np.all(rows[1:] > rows[:-1]))):
                raise CorruptData(f"deletion file {self.path}: rows are not sorted, unique and in range")
            self._rows = rows
        return self._rows
