"""Encoding one tensor into stored arrays in a :mod:`weight format <.formats>`, and decoding it back.

Reshape rule.  A tensor of shape (d0, d1, …, dk) is viewed as the matrix W of shape
(d0, d1·…·dk): rows are outputs, columns the input dimension (PyTorch ``Linear`` (out, in),
convolution kernels (out, in·kh·kw), embedding tables (vocab, dim) — for a table the "input"
dimension is the embedding dimension).  0-D and 1-D tensors are one row.  With ``rht`` the rows
are rotated, W̃ = W·Rᵀ with R the RHT of order n' ≥ n (n' = n for 384, 768, 1536 ...).  W̃ is
zero-padded to whole tiles and cut into **tiles** of r rows × c columns, each one vector of the
quantiser (r·c values), with the shape the quantiser declares
(:meth:`~vqsearch.quantizers.Quantizer.weight_tile`): E8/E8P 1 × 8 (E8 at fractional rates 1 × 8k,
the smallest k giving whole bytes), Leech 1 × 24 (or 1 × 48 ...), trellis T/16 × 16 (QTIP's
16 × 16 tiles for T = 256), any-length quantisers 1 × ``tile``.  Codes are stored
column-block-major: all row tiles of columns [0, c), then of [c, 2c), ...  Column blocks of width
c are also the LDLQ blocks.

Bit accounting.  ``EncodedTensor.bits_per_param`` is 8 × (bytes of every stored array:
codes, scales, outliers, the quantiser's serialised state) + 64 bits of RHT seed, divided by
the number of elements.  Nothing is left out.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import quantizers
from ..errors import CorruptData, InvalidSpec
from ..rht import RandomizedHadamard, hadamard_size
from .formats import WeightFormat, code_bytes, parse_format
from .ldlq import ldlq
from .packing import pack_trits_rows, pack_uint_rows, unpack_trits_rows, unpack_uint_rows

_F16_MAX = float(np.finfo(np.float16).max)
#: Tiles used to fit a data-dependent quantiser (seeded subsample beyond this).
FIT_TILES = 1 << 16
#: Clip ratios searched by ``int:scaling=mse`` (fraction of the block absmax).
_CLIP_GRID = np.linspace(1.0, 0.35, 14)
_RHT_SEED_BITS = 64
#: Nearest rounding encodes column blocks of at least this many values, in at most _PROGRESS_STEPS
#: parts, so that a progress callback moves during one large tensor.
_PROGRESS_VALUES = 1 << 17
_PROGRESS_STEPS = 32


@dataclass
class EncodedTensor:
    """Stored form of one tensor: named arrays plus JSON-able metadata."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes of every stored array (the RHT seed is in ``meta`` and counted in ``bits``)."""
        return int(sum(a.nbytes for a in self.arrays.values()))

    @property
    def bits(self) -> int:
        """Total stored bits, including the 64-bit RHT seed when there is one."""
        return 8 * self.nbytes + (_RHT_SEED_BITS if self.meta.get("rht_seed") is not None else 0)

    @property
    def numel(self) -> int:
        return int(np.prod(self.meta["shape"], dtype=np.int64)) if self.meta["shape"] else 1

    @property
    def bits_per_param(self) -> float:
        return self.bits / max(self.numel, 1)


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The (rows, columns) view of a tensor of ``shape`` (reshape rule in the module docstring)."""
    if len(shape) == 0:
        return (1, 1)
    if len(shape) == 1:
        return (1, int(shape[0]))
    return (int(shape[0]), int(np.prod(shape[1:], dtype=np.int64)))


def rht_seed(name: str, seed: int = 0) -> int:
    """Per-tensor RHT seed: a stable hash of the name mixed with the run seed (fits in 63 bits)."""
    return (zlib.crc32(name.encode()) ^ (int(seed) * 0x9E3779B1)) & 0x7FFFFFFFFFFFFFFF


def encode_tensor(
    w: np.ndarray,
    fmt: WeightFormat | str,
    *,
    name: str = "",
    hessian: np.ndarray | None = None,
    damp: float = 0.01,
    seed: int = 0,
    source_dtype: str = "F32",
    progress: Callable[[float], None] | None = None,
) -> EncodedTensor:
    """Encode one tensor.  ``hessian`` (n × n input covariance, original domain) enables LDLQ.

    ``meta["rounding"]`` records what was applied to a quantised tensor: ``"ldlq"`` when a Hessian
    was given and the format allows it, else ``"nearest"``.  ``progress``, if given, is called with
    the fraction of columns encoded so far (the columns are encoded in blocks, which gives the same
    codes as encoding them at once: every vector is encoded on its own).
    """
    fmt = parse_format(fmt) if isinstance(fmt, str) else fmt
    w = np.asarray(w)
    meta: dict[str, Any] = {"format": fmt.spec, "shape": list(w.shape), "dtype": source_dtype}
    if fmt.kind == "raw" or w.dtype.kind not in "f":
        meta["format"] = "raw"
        meta["raw_dtype"] = np.dtype(w.dtype).newbyteorder("<").str
        data = np.ascontiguousarray(w, dtype=np.dtype(w.dtype).newbyteorder("<"))
        return EncodedTensor({"data": data.reshape(-1).view(np.uint8)}, meta)
    if fmt.kind in ("float16", "float32"):
        dt = "<f2" if fmt.kind == "float16" else "<f4"
        data = np.ascontiguousarray(w, dtype=dt).reshape(-1).view(np.uint8)
        return EncodedTensor({"data": data}, meta)
    m, n = matrix_shape(w.shape)
    mat = np.array(w, dtype=np.float32).reshape(m, n)
    if not np.isfinite(mat).all():
        raise InvalidSpec(f"tensor {name!r} contains NaN or inf; store it as float16/float32/raw")
    arrays: dict[str, np.ndarray] = {}
    if fmt.outliers > 0:
        k = min(mat.size, math.ceil(fmt.outliers * mat.size))
        flat = mat.reshape(-1)
        idx = np.sort(np.argpartition(np.abs(flat), flat.size - k)[flat.size - k:])
        vals = flat[idx]
        arrays["outlier_index"] = idx.astype("<u4" if flat.size < 2**32 else "<u8")
        vdt = "<f2" if np.abs(vals).max(initial=0) <= _F16_MAX else "<f4"
        arrays["outlier_value"] = vals.astype(vdt)
        flat = flat.copy()
        flat[idx] = 0.0
        mat = flat.reshape(m, n)
    transform = None
    if fmt.rht:
        meta["rht_seed"] = rht_seed(name, seed)
        transform = RandomizedHadamard(n, seed=meta["rht_seed"])
        mat = transform.forward(mat)
        if hessian is not None:
            h32 = np.asarray(hessian, dtype=np.float32)
            hessian = transform.forward(transform.forward(h32).T.copy())
    r, c = fmt.tile_shape()
    nw = mat.shape[1]
    n_pad, m_pad = c * -(-nw // c), r * -(-m // r)
    block = fmt.block or n_pad
    nblk = -(-n_pad // block)
    padded = np.zeros((m_pad, n_pad), dtype=np.float32)
    padded[:m, :nw] = mat
    scales = _block_scales(padded[:m], nw, block, nblk, fmt)
    arrays["scales"] = scales
    s_full = np.zeros((m_pad, n_pad), dtype=np.float32)
    s_full[:m] = np.repeat(scales.astype(np.float32), block, axis=1)[:, :n_pad]
    codec = _Codec(fmt, r, c)
    codec.fit(padded, s_full, m)
    h_pad = None
    if hessian is not None and fmt.ldlq:
        h_pad = np.zeros((n_pad, n_pad), dtype=np.float64)
        h_pad[:nw, :nw] = hessian
    parts: list[np.ndarray] = []
    if h_pad is None:
        step = c * max(1, -(-max(_PROGRESS_VALUES, padded.size // _PROGRESS_STEPS) // (m_pad * c)))
        for j0 in range(0, n_pad, step):
            parts.append(codec.quantize(padded[:, j0:j0 + step], s_full[:, j0:j0 + step]))
            if progress is not None:
                progress(min(j0 + step, n_pad) / n_pad)
    else:
        def qblock(j: int, target: np.ndarray) -> np.ndarray:
            sym = codec.quantize(target, s_full[:, j * c:(j + 1) * c])
            parts.append(sym)
            if progress is not None:
                progress((j + 1) * c / n_pad)
            return codec.dequantize(sym, m_pad, c) * s_full[:, j * c:(j + 1) * c]

        ldlq(padded, h_pad, qblock, c, damp=damp)
        meta["ldlq_damp"] = damp
    # Tiles are column-block-major, so column-block parts concatenate in order (symbol rows for vector
    # formats, symbol columns for the element formats).
    symbols = np.concatenate(parts, axis=0) if codec.kind == "vq" else np.concatenate(parts, axis=1)
    meta["rounding"] = "nearest" if h_pad is None else "ldlq"
    arrays["codes"] = codec.pack(symbols)
    if codec.state is not None:
        arrays["state"] = codec.state
    meta.update(rows=m, cols=n, work_cols=nw, tile=[r, c], scale_block=block)
    return EncodedTensor(arrays, meta)


def estimate_bits(fmt: WeightFormat | str, shape: tuple[int, ...], *, state_bytes: int = 0) -> int:
    """Stored bits of a tensor of ``shape`` in ``fmt`` without encoding it (float16 scales assumed).

    ``state_bytes`` is the size of the quantiser's serialised state (vector formats), which only
    an actual fit reveals; it is a few hundred bytes for the data-free codebooks.
    """
    fmt = parse_format(fmt) if isinstance(fmt, str) else fmt
    numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if fmt.kind == "float16":
        return 16 * numel
    if fmt.kind in ("float32", "raw"):
        return 32 * numel
    m, n = matrix_shape(tuple(shape))
    nw = hadamard_size(n)[0] if fmt.rht else n
    r, c = fmt.tile_shape()
    n_pad, m_pad = c * -(-nw // c), r * -(-m // r)
    nblk = -(-n_pad // (fmt.block or n_pad))
    total = 16 * m * nblk + (_RHT_SEED_BITS if fmt.rht else 0)
    if fmt.outliers > 0:
        total += 48 * min(numel, math.ceil(fmt.outliers * numel))
    if fmt.kind == "int":
        total += 8 * m * (-(-n_pad // 8)) * fmt.bits
    elif fmt.kind == "ternary":
        total += 8 * m * (-(-n_pad // 5))
    else:
        cs = code_bytes(fmt.quantizer, r * c)
        total += 8 * cs * (n_pad // c) * (m_pad // r) + 8 * state_bytes
    return int(total)


def _block_scales(mat: np.ndarray, n_real: int, block: int, nblk: int, fmt: WeightFormat) -> np.ndarray:
    """Per-(row, block) scales of the real rows, rounded to the stored dtype (float16, or float32)."""
    m, n_pad = mat.shape
    width = np.minimum(block, np.maximum(n_real - np.arange(nblk) * block, 0)).astype(np.float64)
    width = np.maximum(width, 1.0)
    x = np.zeros((m, nblk * block), dtype=np.float64)
    x[:, :n_pad] = mat
    x = x.reshape(m, nblk, block)
    if fmt.kind == "vq":
        s = np.sqrt(np.sum(x * x, axis=2) / width)
    elif fmt.kind == "ternary":
        s = np.sum(np.abs(x), axis=2) / width
    else:
        s = _int_steps(x, fmt)
    dt = "<f2" if s.max(initial=0.0) <= _F16_MAX else "<f4"
    return s.astype(dt)


def _int_steps(x: np.ndarray, fmt: WeightFormat) -> np.ndarray:
    """Step Δ per (row, block) for ``int``: absmax → Δ = 2·max|w|/(2^k − 1); mse → best clip on a grid."""
    half = (2**fmt.bits - 1) / 2.0
    amax = np.max(np.abs(x), axis=2)
    if fmt.scaling == "absmax":
        return amax / half
    best_err = np.full(amax.shape, np.inf)
    best = amax / half
    for ratio in _CLIP_GRID:
        step = np.maximum(ratio * amax / half, np.finfo(np.float32).tiny)
        q = np.clip(np.rint(x / step[..., None] + half), 0, 2 * half) - half
        err = np.sum((x - q * step[..., None]) ** 2, axis=2)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best = np.where(better, ratio * amax / half, best)
    return best


class _Codec:
    """Quantise normalised values (w / scale) into symbols, pack them, and back."""

    def __init__(self, fmt: WeightFormat, r: int, c: int) -> None:
        self.fmt, self.kind, self.r, self.c = fmt, fmt.kind, r, c
        self.q = None
        self.state: np.ndarray | None = None

    def fit(self, padded: np.ndarray, s_full: np.ndarray, m_real: int) -> None:
        if self.kind != "vq":
            return
        q = quantizers.get(self.fmt.quantizer)
        tiles = _to_tiles(_normalise(padded, s_full), self.r, self.c)
        if q.data_free:
            q.fit_dim(tiles.shape[1])
        else:
            if tiles.shape[0] > FIT_TILES:
                pick = np.random.default_rng(0).choice(tiles.shape[0], FIT_TILES, replace=False)
                tiles = tiles[np.sort(pick)]
            q.fit(tiles)
        self.q = q
        self.state = np.frombuffer(q.to_bytes(), dtype=np.uint8).copy()

    def quantize(self, x: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Unnormalised (rows, width) values and their scales → symbols."""
        u = _normalise(x, s)
        if self.kind == "vq":
            return self.q.encode(_to_tiles(u, self.r, self.c))
        if self.kind == "int":
            half = (2**self.fmt.bits - 1) / 2.0
            return np.clip(np.rint(u + half), 0, 2 * half).astype(np.uint8)
        return np.clip(np.rint(u), -1, 1).astype(np.int8)

    def dequantize(self, sym: np.ndarray, rows: int, width: int) -> np.ndarray:
        """Symbols → normalised values (rows, width)."""
        if self.kind == "vq":
            return _from_tiles(self.q.decode(sym), rows, width, self.r, self.c)
        if self.kind == "int":
            return sym.astype(np.float32) - np.float32((2**self.fmt.bits - 1) / 2.0)
        return sym.astype(np.float32)

    def pack(self, sym: np.ndarray) -> np.ndarray:
        if self.kind == "vq":
            return np.ascontiguousarray(sym, dtype=np.uint8)
        if self.kind == "int":
            return pack_uint_rows(sym, self.fmt.bits)
        return pack_trits_rows(sym)


def _normalise(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    safe = np.where(s > 0, s, np.float32(1.0))
    return (x / safe).astype(np.float32)


def _to_tiles(u: np.ndarray, r: int, c: int) -> np.ndarray:
    """(m, n) → (n/c · m/r, r·c), column-block-major (all row tiles of columns [0, c) first)."""
    m, n = u.shape
    t = u.reshape(m // r, r, n // c, c).transpose(2, 0, 1, 3)
    return np.ascontiguousarray(t.reshape((n // c) * (m // r), r * c))


def _from_tiles(t: np.ndarray, m: int, n: int, r: int, c: int) -> np.ndarray:
    return np.ascontiguousarray(t.reshape(n // c, m // r, r, c).transpose(1, 2, 0, 3).reshape(m, n))


def decode_tensor(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> np.ndarray:
    """Rebuild a tensor from :func:`encode_tensor`'s arrays and metadata.

    Quantised and float formats decode to float32; ``raw`` returns the stored dtype.
    """
    shape = tuple(int(s) for s in meta["shape"])
    spec = meta["format"]
    try:
        if spec == "raw":
            return arrays["data"].view(np.dtype(meta["raw_dtype"])).reshape(shape)
        fmt = parse_format(spec)
        if fmt.kind in ("float16", "float32"):
            dt = "<f2" if fmt.kind == "float16" else "<f4"
            return arrays["data"].view(dt).astype(np.float32).reshape(shape)
        return _decode_quantised(arrays, meta, fmt, shape)
    except (KeyError, ValueError, TypeError) as exc:
        if isinstance(exc, CorruptData):
            raise
        raise CorruptData(f"cannot decode tensor stored as {spec!r}: {exc}") from None


def _decode_quantised(arrays, meta, fmt: WeightFormat, shape: tuple[int, ...]) -> np.ndarray:
    m, n, nw = int(meta["rows"]), int(meta["cols"]), int(meta["work_cols"])
    r, c = (int(v) for v in meta["tile"])
    block = int(meta["scale_block"])
    n_pad, m_pad = c * -(-nw // c), r * -(-m // r)
    codes = arrays["codes"]
    if fmt.kind == "vq":
        q = _load_quantizer(arrays["state"].tobytes())
        u = _from_tiles(q.decode(codes), m_pad, n_pad, r, c)[:m]
    elif fmt.kind == "int":
        u = unpack_uint_rows(codes, fmt.bits, n_pad).astype(np.float32) - np.float32((2**fmt.bits - 1) / 2)
    else:
        u = unpack_trits_rows(codes, n_pad).astype(np.float32)
    scales = arrays["scales"].astype(np.float32)
    if scales.shape != (m, -(-n_pad // block)):
        raise CorruptData(f"scales have shape {scales.shape}, expected {(m, -(-n_pad // block))}")
    mat = u * np.repeat(scales, block, axis=1)[:, :n_pad]
    mat = np.ascontiguousarray(mat[:, :nw])
    if meta.get("rht_seed") is not None:
        mat = RandomizedHadamard(n, seed=int(meta["rht_seed"])).inverse(mat)
    if "outlier_index" in arrays:
        flat = mat.reshape(-1)
        idx = arrays["outlier_index"].astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= flat.size):
            raise CorruptData("outlier positions fall outside the tensor")
        flat[idx] = arrays["outlier_value"].astype(np.float32)
    return mat.reshape(shape)


@functools.lru_cache(maxsize=64)
def _load_quantizer(blob: bytes):
    return quantizers.from_bytes(blob)
