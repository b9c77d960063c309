"""The stored-format side of fine-tuning: decode a compressed tensor into its tunable parts and back.

This module is the one adapter between fine-tuning and the weight-format layout of
:mod:`.codec` (the module docstring there defines it): a quantised tensor is

    W = RHT⁻¹( (U ⊙ S)[:m, :nw] )  reshaped to the tensor's shape,  outliers overwritten,

with U the quantiser's **normalised** reconstruction (decoded codes, zero-padded to whole tiles),
S the per-(row, block) scales repeated along the input dimension, and the RHT along the input
dimension (seeded per tensor).  Fine-tuning trains S (and the outlier values) as continuous
parameters and changes U only through the quantiser itself (:meth:`StoredQuantised.reencode`),
so every record keeps its exact code layout: same arrays, same shapes, same dtypes, same bits.

It also writes a finished archive (shards + manifest) from records held in memory, through the
public writer of :mod:`.shards`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import quantizers
from ..errors import CorruptData, InvalidInput
from .codec import decode_tensor
from .formats import WeightFormat, parse_format
from .manifest import MANIFEST_VERSION, write_manifest
from .packing import pack_trits_rows, pack_uint_rows, unpack_trits_rows, unpack_uint_rows
from .shards import ShardWriter, encode_record

_F16_MAX = float(np.finfo(np.float16).max)


def to_tiles(u: np.ndarray, r: int, c: int) -> np.ndarray:
    """(m, n) → (n/c · m/r, r·c), column-block-major (the code order of :mod:`.codec`)."""
    m, n = u.shape
    return np.ascontiguousarray(u.reshape(m // r, r, n // c, c).transpose(2, 0, 1, 3).reshape(-1, r * c))


def from_tiles(t: np.ndarray, m: int, n: int, r: int, c: int) -> np.ndarray:
    """Inverse of :func:`to_tiles`."""
    return np.ascontiguousarray(t.reshape(n // c, m // r, r, c).transpose(1, 2, 0, 3).reshape(m, n))


@dataclass
class StoredQuantised:
    """A quantised record split into codes (symbols), normalised values U, scales and outliers."""

    name: str
    meta: dict[str, Any]
    fmt: WeightFormat
    shape: tuple[int, ...]
    m: int
    n: int
    nw: int
    r: int
    c: int
    block: int
    symbols: np.ndarray  # vq: (tiles, code bytes) uint8; int: (m, n_pad) uint8; ternary: (m, n_pad) int8
    scales: np.ndarray  # (m, nblk) float32
    scale_dtype: str
    state: np.ndarray | None
    outlier_index: np.ndarray | None
    outlier_value: np.ndarray | None
    outlier_dtype: str | None
    quantizer: Any = None

    @property
    def n_pad(self) -> int:
        return self.c * -(-self.nw // self.c)

    @property
    def m_pad(self) -> int:
        return self.r * -(-self.m // self.r)

    @property
    def rht_seed(self) -> int | None:
        s = self.meta.get("rht_seed")
        return None if s is None else int(s)

    @property
    def n_tiles(self) -> int:
        return (self.m_pad // self.r) * (self.n_pad // self.c)

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_record(cls, name: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> StoredQuantised:
        fmt = parse_format(meta["format"])
        if not fmt.is_quantised:
            raise InvalidInput(f"{name} is stored as {meta['format']!r}, not a quantised format")
        try:
            m, n, nw = int(meta["rows"]), int(meta["cols"]), int(meta["work_cols"])
            r, c = (int(v) for v in meta["tile"])
            block = int(meta["scale_block"])
            codes = np.array(arrays["codes"])
            scales = np.array(arrays["scales"])
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptData(f"{name}: quantised record lacks {exc}") from None
        n_pad = c * -(-nw // c)
        q = None
        state = None
        if fmt.kind == "vq":
            state = np.array(arrays["state"])
            q = quantizers.from_bytes(state.tobytes())
            symbols = codes
        elif fmt.kind == "int":
            symbols = unpack_uint_rows(codes, fmt.bits, n_pad)
        else:
            symbols = unpack_trits_rows(codes, n_pad)
        oi = arrays.get("outlier_index")
        ov = arrays.get("outlier_value")
        return cls(name=name, meta=dict(meta), fmt=fmt, shape=tuple(int(s) for s in meta["shape"]), m=m, n=n,
                   nw=nw, r=r, c=c, block=block, symbols=symbols, scales=scales.astype(np.float32),
                   scale_dtype=scales.dtype.str, state=state,
                   outlier_index=None if oi is None else np.array(oi),
                   outlier_value=None if ov is None else np.array(ov, dtype=np.float32),
                   outlier_dtype=None if ov is None else ov.dtype.str, quantizer=q)

    def normalised(self) -> np.ndarray:
        """U: the decoded symbols in normalised units, float32 (m_pad, n_pad)."""
        return self._decode_symbols(self.symbols)

    def _decode_symbols(self, sym: np.ndarray) -> np.ndarray:
        if self.fmt.kind == "vq":
            return from_tiles(self.quantizer.decode(sym), self.m_pad, self.n_pad, self.r, self.c)
        if self.fmt.kind == "int":
            return sym.astype(np.float32) - np.float32((2**self.fmt.bits - 1) / 2.0)
        return sym.astype(np.float32)

    # ------------------------------------------------------------------ re-encoding (the discrete step)
    def tiles_of(self, a: np.ndarray) -> np.ndarray:
        """(m_pad, n_pad) array → its tiles in code order, (n_tiles, r·c)."""
        return to_tiles(a, self.r, self.c)

    def reencode(self, target: np.ndarray, tile_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Quantise the tiles ``tile_ids`` of ``target`` (normalised, (m_pad, n_pad)) with this tensor's own
        quantiser; returns (new symbols of those tiles, their normalised values (len, r·c)).  Nothing changes
        until :meth:`accept`."""
        tiles = self.tiles_of(target)[tile_ids]
        if self.fmt.kind == "vq":
            sym = self.quantizer.encode(tiles)
            return sym, self.quantizer.decode(sym)
        if self.fmt.kind == "int":
            half = (2**self.fmt.bits - 1) / 2.0
            sym = np.clip(np.rint(tiles + half), 0, 2 * half).astype(np.uint8)
            return sym, sym.astype(np.float32) - np.float32(half)
        sym = np.clip(np.rint(tiles), -1, 1).astype(np.int8)
        return sym, sym.astype(np.float32)

    def accept(self, tile_ids: np.ndarray, sym: np.ndarray) -> np.ndarray:
        """Store re-encoded symbols of ``tile_ids`` (from :meth:`reencode`); returns the previous ones
        (``accept(tile_ids, previous)`` undoes it)."""
        if self.fmt.kind == "vq":
            old = self.symbols[tile_ids].copy()
            self.symbols[tile_ids] = sym
            return old
        tiles = self.tiles_of(self.symbols)  # element formats: tiles are (1 × c) groups of a row
        old = tiles[tile_ids].copy()
        tiles[tile_ids] = sym
        self.symbols = from_tiles(tiles, self.m_pad, self.n_pad, self.r, self.c).astype(self.symbols.dtype)
        return old

    # ------------------------------------------------------------------ writing
    def record(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, meta) in exactly the layout the record was read in."""
        arrays: dict[str, np.ndarray] = {}
        if self.outlier_index is not None:
            arrays["outlier_index"] = self.outlier_index
            arrays["outlier_value"] = self.outlier_value.astype(_storable(self.outlier_value, self.outlier_dtype))
        arrays["scales"] = self.scales.astype(_storable(self.scales, self.scale_dtype))
        if self.fmt.kind == "vq":
            arrays["codes"] = np.ascontiguousarray(self.symbols, dtype=np.uint8)
        elif self.fmt.kind == "int":
            arrays["codes"] = pack_uint_rows(self.symbols, self.fmt.bits)
        else:
            arrays["codes"] = pack_trits_rows(self.symbols)
        if self.state is not None:
            arrays["state"] = self.state
        return arrays, dict(self.meta)

    def decoded(self) -> np.ndarray:
        """The tensor as :func:`~vqsearch.weights.codec.decode_tensor` reads it back (float32)."""
        arrays, meta = self.record()
        return decode_tensor(arrays, meta)


def _storable(a: np.ndarray, dtype: str | None) -> str:
    """float16 unless the stored dtype was wider or a value overflows float16."""
    if dtype is not None and np.dtype(dtype).itemsize > 2:
        return dtype
    return "<f2" if float(np.max(np.abs(a), initial=0.0)) <= _F16_MAX else "<f4"


def float_record(meta: dict[str, Any], values: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A float16/float32 record with new values (same format, same shape)."""
    fmt = parse_format(meta["format"])
    dt = "<f2" if fmt.kind == "float16" else "<f4"
    data = np.ascontiguousarray(values.reshape([int(s) for s in meta["shape"]]), dtype=dt)
    return {"data": data.reshape(-1).view(np.uint8)}, dict(meta)


def write_archive(root: Path, records: Iterable[tuple[str, dict[str, np.ndarray], dict[str, Any], dict[str, Any]]],
                  manifest: dict[str, Any], shard_size: int) -> None:
    """Write ``(name, arrays, meta, info)`` records into ``root/shards`` and the manifest last.

    ``manifest`` supplies every top-level key except ``tensors``, ``shards`` and ``totals``,
    which are computed here (bits counted from the stored arrays, as :mod:`.codec` does).
    """
    t0 = time.perf_counter()
    writer = ShardWriter(root, shard_size)
    tensors = []
    try:
        for name, arrays, meta, info in records:
            ref = writer.write(name, encode_record(name, arrays, meta))
            bits = 8 * int(sum(a.nbytes for a in arrays.values())) + (64 if meta.get("rht_seed") is not None else 0)
            numel = int(np.prod(meta["shape"], dtype=np.int64)) if meta["shape"] else 1
            tensors.append({"name": name, "shape": list(meta["shape"]), "dtype": meta["dtype"],
                            "format": meta["format"],
                            "params": {k: v for k, v in meta.items() if k not in ("format", "shape", "dtype")},
                            "shard": ref.shard, "offset": ref.offset, "length": ref.length, "sha256": ref.sha256,
                            **info, "bits": bits, "bits_per_param": bits / max(numel, 1)})
    except BaseException:
        writer.abort()
        raise
    shards = writer.close()
    total_params = sum(int(np.prod(t["shape"], dtype=np.int64)) if t["shape"] else 1 for t in tensors)
    total_bits = sum(t["bits"] for t in tensors)
    out = {"format_version": MANIFEST_VERSION, **manifest, "shards": shards, "tensors": tensors,
           "totals": {"params": total_params, "bits": total_bits, "bits_per_param": total_bits / max(total_params, 1),
                      "bytes_on_disk": sum(s["bytes"] for s in shards)}}
    out["seconds"] = float(manifest.get("seconds", 0.0)) + time.perf_counter() - t0
    write_manifest(root, out)
