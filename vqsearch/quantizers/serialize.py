"""Binary serialisation of fitted quantisers.

Layout (little-endian)::

    magic      4 bytes  b"VQQZ"
    version    uint16   container format version (``CONTAINER_VERSION``)
    codec_id   uint16   stable id of the quantiser family (registry)
    hdr_len    uint32   length of the JSON header
    header     JSON     {"name", "format_version", "params", "d", "rht_signs"?, "arrays": [...]}
    payload    raw array bytes, each 8-byte aligned, described by header["arrays"]
    crc32      uint32   of everything before it

Nothing in the header is trusted: sizes, offsets, dtypes and shapes are all
validated before any array is built, and every failure raises ``CorruptData``.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CorruptData
from ..rht import RandomizedHadamard

if TYPE_CHECKING:
    from .base import Quantizer

MAGIC = b"VQQZ"
CONTAINER_VERSION = 1
_PREFIX = struct.Struct("<4sHHI")
_ALLOWED_DTYPES = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                   "float16", "float32", "float64"}


def dump_quantizer(q: Quantizer) -> bytes:
    arrays = dict(q._state())
    if q._transform is not None:
        arrays["__rht_signs"] = q._transform.packed_signs()
    descs, chunks, offset = [], [], 0
    for key, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype.name not in _ALLOWED_DTYPES:
            raise TypeError(f"cannot serialise array {key!r} of dtype {arr.dtype}")
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        pad = (-offset) % 8
        chunks.append(b"\0" * pad + raw)
        offset += pad
        descs.append({"key": key, "dtype": arr.dtype.name, "shape": list(arr.shape),
                      "offset": offset, "nbytes": len(raw)})
        offset += len(raw)
    header = json.dumps({
        "name": q.name,
        "format_version": q.format_version,
        "params": q.params(),
        "d": q.d,
        "arrays": descs,
    }, sort_keys=True).encode()
    body = _PREFIX.pack(MAGIC, CONTAINER_VERSION, q.codec_id, len(header)) + header + b"".join(chunks)
    return body + struct.pack("<I", zlib.crc32(body))


def load_quantizer(blob: bytes, registry_by_id: dict) -> Quantizer:
    blob = bytes(blob)
    if len(blob) < _PREFIX.size + 4:
        raise CorruptData(f"quantiser blob too short ({len(blob)} bytes)")
    magic, version, codec_id, hdr_len = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise CorruptData(f"not a vqsearch quantiser blob (magic {magic!r})")
    if version != CONTAINER_VERSION:
        raise CorruptData(f"unsupported quantiser container version {version}")
    (crc,) = struct.unpack_from("<I", blob, len(blob) - 4)
    if zlib.crc32(blob[:-4]) != crc:
        raise CorruptData("quantiser blob checksum mismatch (truncated or corrupted)")
    if codec_id not in registry_by_id:
        raise CorruptData(f"unknown codec id {codec_id}")
    cls = registry_by_id[codec_id]
    start = _PREFIX.size
    if start + hdr_len > len(blob) - 4:
        raise CorruptData("quantiser header length exceeds blob size")
    try:
        header = json.loads(blob[start:start + hdr_len])
        params, d, descs = header["params"], header["d"], header["arrays"]
        fmt = int(header["format_version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptData(f"malformed quantiser header: {exc}") from None
    if header.get("name") != cls.name:
        raise CorruptData(f"codec id {codec_id} is {cls.name!r}, header says {header.get('name')!r}")
    if fmt > cls.format_version:
        raise CorruptData(f"{cls.name} state format {fmt} is newer than supported ({cls.format_version})")
    payload = memoryview(blob)[start + hdr_len:len(blob) - 4]
    arrays = {}
    for desc in descs:
        try:
            dtype = np.dtype(desc["dtype"]).newbyteorder("<")
            shape = tuple(int(s) for s in desc["shape"])
            off, nbytes = int(desc["offset"]), int(desc["nbytes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptData(f"malformed array descriptor: {exc}") from None
        if desc["dtype"] not in _ALLOWED_DTYPES or any(s < 0 for s in shape):
            raise CorruptData(f"invalid array descriptor {desc!r}")
        if nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or off < 0 \
                or off + nbytes > len(payload):
            raise CorruptData(f"array {desc['key']!r} does not fit the payload")
        arrays[desc["key"]] = np.frombuffer(payload[off:off + nbytes], dtype=dtype).reshape(shape).copy()
    try:
        q = cls(**params)
        q._setup(int(d))
        signs = arrays.pop("__rht_signs", None)
        if q.rht:
            if signs is None:
                raise CorruptData("RHT signs missing from quantiser state")
            q._transform = RandomizedHadamard.from_packed(q.d, signs)
        q._load_state(arrays)
    except CorruptData:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptData(f"cannot restore {cls.name} state: {exc}") from None
    q._fitted = True
    return q
