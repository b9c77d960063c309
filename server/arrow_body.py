"""Reading an Arrow IPC stream body with its cost bounded before it is paid.

A compressed stream can expand a thousandfold, so the wire size says little.  The stream
is read message by message:

1. the schema message first: the columns are checked (``check_schema``) before any record
   batch is read;
2. for each record batch, the decompressed size is computed from the message's metadata
   (every body buffer of a compressed batch starts with its uncompressed length) and added
   to a running total; once the total passes the limit, reading stops with a 413, before
   that batch is decompressed;
3. each batch is validated in full (offsets, UTF-8, sizes) as it is read, so a damaged
   stream is a 400 ``invalid_arrow`` and never reaches the index.

Only the few flatbuffer fields needed for step 2 are read here (Arrow's ``Message.fbs``:
``Message.header`` → ``RecordBatch.buffers`` and ``RecordBatch.compression``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pyarrow as pa

from .errors import InvalidArrow, PayloadTooLarge

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
#: Field numbers in Arrow's Message.fbs.
_MESSAGE_HEADER = 2
_BATCH_BUFFERS = 2
_BATCH_COMPRESSION = 3


class _Table:
    """A flatbuffer table: reads fields through its vtable, with bounds checks."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        vt = pos - _I32.unpack_from(buf, pos)[0]
        if not 0 <= vt <= len(buf) - 4:
            raise ValueError("bad vtable offset")
        self.vt = vt
        self.vt_size = _U16.unpack_from(buf, vt)[0]

    def _field(self, index: int) -> int | None:
        off = 4 + 2 * index
        if off + 2 > self.vt_size:
            return None
        rel = _U16.unpack_from(self.buf, self.vt + off)[0]
        return None if rel == 0 else self.pos + rel

    def table(self, index: int) -> _Table | None:
        at = self._field(index)
        return None if at is None else _Table(self.buf, at + _U32.unpack_from(self.buf, at)[0])

    def structs(self, index: int, size: int) -> list[bytes]:
        at = self._field(index)
        if at is None:
            return []
        start = at + _U32.unpack_from(self.buf, at)[0]
        n = _U32.unpack_from(self.buf, start)[0]
        if start + 4 + n * size > len(self.buf):
            raise ValueError("vector out of bounds")
        return [self.buf[start + 4 + i * size:start + 4 + (i + 1) * size] for i in range(n)]


def decompressed_size(message: pa.ipc.Message) -> int:
    """Bytes the record batch ``message`` occupies once decompressed (its body size when uncompressed)."""
    body = message.body
    meta = message.metadata.to_pybytes()
    try:
        root = _Table(meta, _U32.unpack_from(meta, 0)[0])
        header = root.table(_MESSAGE_HEADER)
        if header is None:
            raise ValueError("no header")
        buffers = [(_I64.unpack_from(b, 0)[0], _I64.unpack_from(b, 8)[0]) for b in header.structs(_BATCH_BUFFERS, 16)]
        compressed = header.table(_BATCH_COMPRESSION) is not None
    except (ValueError, struct.error) as exc:
        raise InvalidArrow(f"body is not a valid Arrow IPC stream: unreadable record batch metadata ({exc})") from None
    if not compressed:
        return body.size
    total = 0
    view = memoryview(body)
    for offset, length in buffers:
        if length == 0:
            continue
        if offset < 0 or length < 8 or offset + length > body.size:
            raise InvalidArrow("body is not a valid Arrow IPC stream: a compressed buffer lies outside the body")
        raw = _I64.unpack_from(view, offset)[0]
        if raw < -1:
            raise InvalidArrow("body is not a valid Arrow IPC stream: negative uncompressed buffer length")
        total += length - 8 if raw == -1 else raw
    return total


def read_stream(source: pa.NativeFile, max_bytes: int, check_schema: Callable[[pa.Schema], None]) -> pa.Table:
    """The stream in ``source`` as a table, with the schema checked first and decompressed bytes bounded."""
    try:
        reader = pa.ipc.MessageReader.open_stream(source)
        first = reader.read_next_message()
        if first.type != "schema":
            raise InvalidArrow(f"body is not a valid Arrow IPC stream: it starts with a {first.type} message")
        schema = pa.ipc.read_schema(first)
    except StopIteration:
        raise InvalidArrow("body is not a valid Arrow IPC stream: it is empty") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidArrow(f"body is not a valid Arrow IPC stream: {exc}") from None
    if any(pa.types.is_dictionary(f.type) for f in schema):
        raise InvalidArrow("dictionary-encoded columns are not supported; send plain columns")
    check_schema(schema)
    batches = []
    total = 0
    while True:
        try:
            message = reader.read_next_message()
        except StopIteration:
            break
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InvalidArrow(f"body is not a valid Arrow IPC stream: {exc}") from None
        if message.type != "record batch":
            raise InvalidArrow(f"body is not a valid Arrow IPC stream: unexpected {message.type} message")
        total += decompressed_size(message)
        if total > max_bytes:
            raise PayloadTooLarge(f"the Arrow stream decompresses to more than the limit of {max_bytes:,} bytes "
                                  "(setting max_arrow_bytes)")
        try:
            batch = pa.ipc.read_record_batch(message, schema)
            batch.validate(full=True)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InvalidArrow(f"body is not a valid Arrow IPC stream: {exc}") from None
        batches.append(batch)
    return pa.Table.from_batches(batches, schema)
