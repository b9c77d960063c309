"""An independent reader and writer of serialised quantiser blobs (the layout documented in
``vqsearch/quantizers/serialize.py``), so that tests can build corrupt states through the public
``quantizers.from_bytes`` instead of reaching into a quantiser's private fields.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

PREFIX = struct.Struct("<4sHHI")  # magic, container version, codec id, header length


def read_blob(blob: bytes) -> tuple[int, dict, dict[str, np.ndarray]]:
    """(codec id, JSON header, arrays by key) of a valid blob."""
    magic, _, codec_id, header_len = PREFIX.unpack_from(blob)
    assert magic == b"VQQZ"
    header = json.loads(blob[PREFIX.size:PREFIX.size + header_len])
    payload = blob[PREFIX.size + header_len:-4]
    arrays = {}
    for desc in header["arrays"]:
        raw = payload[desc["offset"]:desc["offset"] + desc["nbytes"]]
        arrays[desc["key"]] = np.frombuffer(raw, dtype=np.dtype(desc["dtype"]).newbyteorder("<")).reshape(
            desc["shape"]).copy()
    return codec_id, header, arrays


def write_blob(codec_id: int, header: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """A blob with ``header`` (its ``arrays`` list is rebuilt from ``arrays``) and a valid checksum."""
    descs, chunks, offset = [], [], 0
    for key, arr in arrays.items():
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        pad = (-offset) % 8
        chunks.append(b"\0" * pad + raw)
        offset += pad
        descs.append({"key": key, "dtype": arr.dtype.name, "shape": list(arr.shape), "offset": offset,
                      "nbytes": len(raw)})
        offset += len(raw)
    head = json.dumps({**header, "arrays": descs}, sort_keys=True).encode()
    body = PREFIX.pack(b"VQQZ", 1, codec_id, len(head)) + head + b"".join(chunks)
    return body + struct.pack("<I", zlib.crc32(body))
