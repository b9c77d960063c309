"""Arrow shards of compressed tensors (records, writer, reader) and the resume journal.

Layout of a compressed model directory (the manifest is described in :mod:`.manifest`)::

    manifest.json             written last, atomically (tmp file + fsync + rename + fsync dir)
    shards/00000.arrows       Arrow IPC *stream*: the schema message, one record batch per tensor,
    shards/00001.arrows       then the end-of-stream marker; at most ``shard_size`` bytes each
    files/config.json ...     the source model's configuration and tokenizer files, copied
    _journal.jsonl            (while compressing) one line per committed tensor, for resuming

Each tensor is one record batch (one row per stored array) with the columns ``key`` (array name:
``codes``, ``scales``, ``outlier_index``, ``outlier_value``, ``state``, ``data``, and ``__meta__``
holding the tensor's JSON metadata), ``dtype`` (numpy little-endian dtype string), ``shape`` and
``data`` (the raw bytes, zero-padded to a multiple of 8 so every array is 8-byte aligned in the
file).  A record is therefore self-describing: the server hands it out as is for
``encoding=codes``.  Records are encapsulated IPC messages written back to back, so the manifest
can give each tensor's byte range ``[offset, offset + length)`` and its SHA-256, and a reader
memory-maps the shard and parses only the record it needs (:func:`read_record`).  The stream
format (rather than the IPC file format) is what makes resuming possible: a shard cut short by a
crash is still a valid prefix, and the writer truncates it to the last committed record and goes
on appending.  A tensor larger than ``shard_size`` gets a shard of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import CorruptData, InvalidInput

SCHEMA = pa.schema(
    [("key", pa.string()), ("dtype", pa.string()), ("shape", pa.list_(pa.int64())), ("data", pa.large_binary())],
    metadata={b"vqsearch.weights": b"1"},
)
EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
JOURNAL = "_journal.jsonl"
SHARD_DIR = "shards"


def _schema_bytes() -> bytes:
    return SCHEMA.serialize().to_pybytes()


def sha256(data: bytes | memoryview | np.ndarray) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def encode_record(name: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> bytes:
    """One tensor → the bytes of one encapsulated Arrow IPC record-batch message."""
    keys, dtypes, shapes, blobs = ["__meta__"], ["|u1"], [[0]], []
    head = json.dumps({"name": name, **meta}, sort_keys=True).encode()
    shapes[0] = [len(head)]
    blobs.append(_pad8(head))
    for key, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.kind not in "biuf":
            raise InvalidInput(f"tensor {name!r}: stored array {key!r} has dtype {a.dtype}; only numeric arrays "
                               "can be stored")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        keys.append(key)
        dtypes.append(a.dtype.str)
        shapes.append(list(a.shape))
        blobs.append(_pad8(a.tobytes()))
    batch = pa.RecordBatch.from_arrays(
        [pa.array(keys), pa.array(dtypes), pa.array(shapes, pa.list_(pa.int64())),
         pa.array(blobs, pa.large_binary())], schema=SCHEMA)
    return batch.serialize().to_pybytes()


def _pad8(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 8)


def decode_record(buf: pa.Buffer | bytes, where: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse a record message → (metadata, arrays).  Arrays are zero-copy views of ``buf``."""
    try:
        batch = pa.ipc.read_record_batch(buf if isinstance(buf, pa.Buffer) else pa.py_buffer(buf), SCHEMA)
        keys = batch.column("key").to_pylist()
        dtypes = batch.column("dtype").to_pylist()
        shapes = batch.column("shape").to_pylist()
        data = batch.column("data")
        meta: dict[str, Any] | None = None
        arrays: dict[str, np.ndarray] = {}
        for i, key in enumerate(keys):
            raw = data[i].as_buffer()
            if key == "__meta__":
                meta = json.loads(raw.to_pybytes()[: shapes[i][0]])
                continue
            dt = np.dtype(dtypes[i])
            count = int(np.prod(shapes[i], dtype=np.int64))
            arrays[key] = np.frombuffer(raw, dtype=dt, count=count).reshape(shapes[i])
    except (pa.ArrowException, ValueError, TypeError, IndexError, json.JSONDecodeError) as exc:
        raise CorruptData(f"{where}: malformed Arrow record ({exc})") from None
    if meta is None:
        raise CorruptData(f"{where}: record has no __meta__ entry")
    return meta, arrays


# ----------------------------------------------------------------------------- writing
@dataclass
class RecordRef:
    """Where a committed tensor lives."""

    name: str
    shard: str  # relative path, e.g. "shards/00000.arrows"
    offset: int
    length: int
    sha256: str


class ShardWriter:
    """Append tensor records to size-bounded shards; fsync each record before it is journaled."""

    def __init__(self, root: Path, shard_size: int, first_index: int = 0) -> None:
        self.root = Path(root)
        self.shard_size = int(shard_size)
        (self.root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        self._first = int(first_index)
        self._index = self._first - 1
        self._fh = None
        self._size = 0
        self._count = 0

    def resume(self, refs: list[RecordRef]) -> None:
        """Continue after the committed records ``refs`` (a prefix): truncate and reopen the last shard."""
        if not refs:
            return
        last = refs[-1]
        path = self.root / last.shard
        self._index = int(Path(last.shard).stem)
        end = last.offset + last.length
        with open(path, "r+b") as fh:
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
        self._fh = open(path, "ab")
        self._size = end
        self._count = sum(1 for r in refs if r.shard == last.shard)

    @property
    def current(self) -> str:
        return shard_name(self._index)

    def _open_next(self) -> None:
        self._close_current()
        self._index += 1
        self._fh = open(self.root / self.current, "wb")
        head = _schema_bytes()
        self._fh.write(head)
        self._size = len(head)
        self._count = 0

    def _close_current(self) -> None:
        if self._fh is not None:
            self._fh.write(EOS)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def write(self, name: str, record: bytes) -> RecordRef:
        if self._fh is None or (self._count and self._size + len(record) + len(EOS) > self.shard_size):
            self._open_next()
        offset = self._size
        self._fh.write(record)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._size += len(record)
        self._count += 1
        return RecordRef(name, self.current, offset, len(record), sha256(record))

    def abort(self) -> None:
        """Close the current shard without the end marker (an interrupted run; resume truncates it)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def close(self) -> list[dict[str, Any]]:
        """Finish the current shard; returns the shard table (file, bytes, sha256) of the shards written."""
        self._close_current()
        out = []
        for i in range(self._first, self._index + 1):
            rel = shard_name(i)
            p = self.root / rel
            out.append({"file": rel, "bytes": p.stat().st_size, "sha256": file_sha256(p)})
        return out


def shard_name(index: int) -> str:
    """Path of shard ``index`` relative to the model directory (``shards/00000.arrows``)."""
    return f"{SHARD_DIR}/{index:05d}.arrows"


def shard_index(rel: str) -> int:
    """Inverse of :func:`shard_name` (-1 for a name it did not make)."""
    stem = Path(rel).stem
    return int(stem) if Path(rel).parent.name == SHARD_DIR and stem.isdigit() else -1


# ----------------------------------------------------------------------------- journal
class Journal:
    """Append-only JSON-lines log of committed tensors (first line: the job description)."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / JOURNAL

    def read(self) -> tuple[dict | None, list[dict]]:
        """(job, entries); a torn last line (crash while appending) is ignored."""
        if not self.path.exists():
            return None, []
        job, entries = None, []
        for i, line in enumerate(self.path.read_text().splitlines()):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                break
            if i == 0:
                job = obj.get("job")
            else:
                entries.append(obj)
        return job, entries

    def start(self, job: dict, entries: list[dict]) -> None:
        """Rewrite the journal with ``job`` and the entries kept from a previous run."""
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            fh.write(json.dumps({"job": job}, sort_keys=True) + "\n")
            for e in entries:
                fh.write(json.dumps(e, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def append(self, entry: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def valid_prefix(root: Path, entries: list[dict]) -> list[dict]:
    """The journal entries whose records are intact on disk (a prefix; verification stops at the first bad one)."""
    kept: list[dict] = []
    seen_shards: list[str] = []
    for e in entries:
        try:
            path = Path(root) / e["shard"]
            if seen_shards and e["shard"] != seen_shards[-1] and e["shard"] in seen_shards:
                break
            with open(path, "rb") as fh:
                fh.seek(int(e["offset"]))
                data = fh.read(int(e["length"]))
        except (OSError, KeyError, ValueError, TypeError):
            break
        if len(data) != int(e["length"]) or sha256(data) != e.get("sha256"):
            break
        kept.append(e)
        if not seen_shards or seen_shards[-1] != e["shard"]:
            seen_shards.append(e["shard"])
    return kept


# ----------------------------------------------------------------------------- reading
class ShardReader:
    """Memory-mapped access to the records of one shard file.

    ``label`` names the shard in error messages (default: its path); the server passes a name
    relative to the model, so that no message reveals where models live on its disk.
    """

    def __init__(self, path: Path, label: str | None = None) -> None:
        self.path = Path(path)
        self.label = label or str(self.path)
        try:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        except (FileNotFoundError, ValueError):
            raise CorruptData(f"{self.label}: shard is missing or empty") from None
        head = _schema_bytes()
        if self._mm.size < len(head) or bytes(self._mm[: len(head)]) != head:
            raise CorruptData(f"{self.label}: not a vqsearch weights shard (schema message mismatch)")

    @property
    def size(self) -> int:
        return int(self._mm.size)

    def raw(self, offset: int, length: int) -> np.ndarray:
        if offset < 0 or length < 0 or offset + length > self._mm.size:
            raise CorruptData(f"{self.label}: byte range [{offset}, {offset + length}) is beyond the end of the "
                              f"shard ({self._mm.size} bytes): the file is truncated")
        return self._mm[offset: offset + length]

    def record(self, offset: int, length: int, checksum: str | None) -> tuple[dict, dict[str, np.ndarray]]:
        view = self.raw(offset, length)
        if checksum is not None and sha256(view) != checksum:
            raise CorruptData(f"{self.label}: record at byte {offset} fails its SHA-256 checksum (corrupt shard)")
        return decode_record(pa.py_buffer(view), self.label)

    def iter_records(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from pa.ipc.open_stream(pa.py_buffer(self._mm))
        except pa.ArrowException as exc:
            raise CorruptData(f"{self.label}: {exc}") from None
