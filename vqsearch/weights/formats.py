"""Weight formats: how one tensor is turned into stored arrays and back.

A format is a spec string ``name[:key=value,...]``:

==================================  =========================================================
``float16`` / ``float32`` / ``raw``  stored as is (``raw`` keeps the source dtype; non-float
                                     tensors such as ``position_ids`` are always ``raw``)
``int:bits=k``  (``int4``, ``int2``) round-to-nearest uniform k-bit integers (2^k levels,
                                     symmetric "midrise": (i − (2^k − 1)/2)·Δ) with one
                                     float16 step Δ per block of ``block`` weights (default
                                     128); Δ from the block's absmax (``scaling=absmax``) or
                                     the MSE-optimal clip on a grid (``scaling=mse``, default)
``ternary``  (``absmean``)            BitNet b1.58's absmean rule (quantizers.md §4.2):
                                     γ = mean|w| per block, t = clip(round(w/γ), −1, 1),
                                     packed 5 trits per byte (1.6 bits) + float16 γ
any registered quantiser spec        vector formats: ``e8p:bits=2``, ``e8:bits=2.5``,
(``vqsearch.quantizers.get``)        ``leech:bits=2``, ``trellis:bits=2,L=12``, ``pq:m=2``...
==================================  =========================================================

Keys that belong to the weight format (everything else goes to the quantiser):

* ``rht`` — randomized Hadamard transform along the input dimension (default ``true`` for vector
  formats, ``false`` for the ``int`` and ``ternary`` baselines).  Seeded per tensor; the seed is
  stored (64 bits, counted).
* ``block`` — weights per scale along the input dimension (0 = one scale per row, the default
  for vector and ternary formats).  Vector formats use the block RMS, so the quantiser always
  sees unit-RMS data (what its codebook gain is tuned for).  Scales are float16 (float32 only if
  a scale overflows float16), counted.
* ``outliers`` — fraction of weights (largest |w|, e.g. 0.005) kept exactly as float16 values
  with 32-bit flat positions (48 bits each, counted), as in SpQR / Orr et al.'s sparse-outlier
  formats; the remaining weights are quantised with the dense format.
* ``ldlq`` — use Hessian-aware rounding when an input covariance is available (default true).

Reshape rule.  A tensor of shape (d0, d1, …, dk) is viewed as the matrix W of shape
(d0, d1·…·dk): rows are outputs, columns the input dimension (PyTorch ``Linear`` (out, in),
convolution kernels (out, in·kh·kw), embedding tables (vocab, dim) — for a table the "input"
dimension is the embedding dimension).  0-D and 1-D tensors are one row.  With ``rht`` the rows
are rotated, W̃ = W·Rᵀ with R the RHT of order n' ≥ n (n' = n for 384, 768, 1536 ...).  W̃ is
zero-padded to whole tiles and cut into **tiles** of r rows × c columns, each one vector of the
quantiser (r·c values): E8/E8P 1 × 8 (E8 at fractional rates 1 × 8k, the smallest k giving
whole bytes), Leech 1 × 24 (or 1 × 48 ...), trellis 16 × T/16 (QTIP's 16 × 16 tiles for
T = 256), others 1 × ``tile`` (default 8).  Codes are stored column-block-major: all row tiles
of columns [0, c), then of [c, 2c), ...  Column blocks of width c are also the LDLQ blocks.

Bit accounting.  ``EncodedTensor.bits_per_param`` is 8 × (bytes of every stored array:
codes, scales, outliers, the quantiser's serialised state) + 64 bits of RHT seed, divided by
the number of elements.  Nothing is left out.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import quantizers
from ..errors import CorruptData, InvalidSpec
from ..rht import RandomizedHadamard
from .ldlq import ldlq

#: Weight-format keys (the rest of a vector spec belongs to the quantiser).
_WEIGHT_KEYS = ("rht", "block", "outliers", "ldlq", "scaling", "tile")
_F16_MAX = float(np.finfo(np.float16).max)
#: Tiles used to fit a data-dependent quantiser (seeded subsample beyond this).
FIT_TILES = 1 << 16
#: Clip ratios searched by ``int:scaling=mse`` (fraction of the block absmax).
_CLIP_GRID = np.linspace(1.0, 0.35, 14)
_RHT_SEED_BITS = 64
_ALIASES = {
    "fp16": "float16", "f16": "float16", "half": "float16", "fp32": "float32", "f32": "float32",
    "absmean": "ternary", "bitnet": "ternary",
}


@dataclass(frozen=True)
class WeightFormat:
    """A parsed weight format (see the module docstring); build with :func:`parse_format`."""

    kind: str  # "raw" | "float16" | "float32" | "int" | "ternary" | "vq"
    bits: int = 0  # int only
    quantizer: str = ""  # vq only: the quantiser spec (without rht/seed)
    rht: bool = False
    block: int = 0
    outliers: float = 0.0
    ldlq: bool = True
    scaling: str = "mse"  # int only
    tile: int = 8  # generic vq only: columns per tile

    @property
    def spec(self) -> str:
        """Canonical spec string (every weight-format key explicit)."""
        if self.kind in ("raw", "float16", "float32"):
            return self.kind
        keys: dict[str, Any] = {}
        if self.kind == "int":
            head = f"int:bits={self.bits}"
            keys["scaling"] = self.scaling
        elif self.kind == "ternary":
            head = "ternary"
        else:
            head = self.quantizer
        keys.update(rht=str(self.rht).lower(), block=self.block, outliers=f"{self.outliers:g}",
                    ldlq=str(self.ldlq).lower())
        if self.kind == "vq" and _family(self.quantizer) not in ("e8p", "e8", "leech", "trellis"):
            keys["tile"] = self.tile
        sep = "," if ":" in head else ":"
        return head + sep + ",".join(f"{k}={v}" for k, v in keys.items())

    @property
    def is_quantised(self) -> bool:
        return self.kind in ("int", "ternary", "vq")

    @property
    def nominal_bits(self) -> float:
        """Code bits per weight before overheads (scales, padding, outliers)."""
        if self.kind == "float16":
            return 16.0
        if self.kind in ("float32", "raw"):
            return 32.0
        if self.kind == "int":
            return float(self.bits)
        if self.kind == "ternary":
            return 1.6
        r, c = self.tile_shape()
        return 8.0 * _quantizer_proto(self.quantizer, r * c)._code_size() / (r * c)

    def tile_shape(self) -> tuple[int, int]:
        """(rows r, columns c) of one quantiser vector (element formats: 1 × 8 for LDLQ)."""
        if self.kind != "vq":
            return (1, 8)
        return _vq_tile(self.quantizer, self.tile)


@functools.cache
def _vq_tile(qspec: str, tile: int) -> tuple[int, int]:
    fam = _family(qspec)
    cls, kw = quantizers.parse_spec(qspec)
    q = cls(**kw)
    if fam == "e8p":
        return (1, 8)
    if fam == "e8":
        nbits = q._nbits
        return (1, 8 * (8 // math.gcd(nbits, 8)))
    if fam == "leech":
        return (1, 24 * (8 // math.gcd(q.block_bits, 8)))
    if fam == "trellis":
        if q.T % 16:
            raise InvalidSpec(f"trellis weights need T to be a multiple of 16 (16-column tiles), got {q.T}")
        return (q.T // 16, 16)
    return (1, tile)


def _family(qspec: str) -> str:
    return quantizers.parse_spec(qspec)[0].name


@functools.cache
def _quantizer_proto(qspec: str, d: int):
    q = quantizers.get(qspec)
    q._setup(d)
    return q


def _bool(key: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise InvalidSpec(f"weight format key {key}={raw!r} is not a boolean")


@functools.cache
def parse_format(spec: str) -> WeightFormat:
    """Parse a weight format spec (module docstring) into a :class:`WeightFormat`.

    >>> parse_format("int4").spec
    'int:bits=4,scaling=mse,rht=false,block=128,outliers=0,ldlq=true'
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidSpec(f"weight format must be a non-empty string, got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    name = _ALIASES.get(name.strip().lower(), name.strip().lower())
    kv: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            raise InvalidSpec(f"{spec!r}: expected key=value, got {part!r}")
        kv[key.strip()] = value.strip()
    if name.startswith("int") and name[3:].isdigit():
        kv.setdefault("bits", name[3:])
        name = "int"
    weight_kv = {k: kv.pop(k) for k in list(kv) if k in _WEIGHT_KEYS}
    if name in ("raw", "float16", "float32"):
        if kv or weight_kv:
            raise InvalidSpec(f"format {name!r} takes no parameters, got {spec!r}")
        return WeightFormat(kind=name)
    defaults = {"rht": name not in ("int", "ternary"), "block": 128 if name == "int" else 0}
    try:
        rht = _bool("rht", weight_kv["rht"]) if "rht" in weight_kv else defaults["rht"]
        block = int(weight_kv.get("block", defaults["block"]))
        outliers = float(weight_kv.get("outliers", 0.0))
        use_ldlq = _bool("ldlq", weight_kv["ldlq"]) if "ldlq" in weight_kv else True
        tile = int(weight_kv.get("tile", 8))
    except ValueError as exc:
        raise InvalidSpec(f"{spec!r}: {exc}") from None
    scaling = weight_kv.get("scaling", "mse")
    if block < 0:
        raise InvalidSpec(f"{spec!r}: block must be >= 0 (0 = one scale per row), got {block}")
    if not 0.0 <= outliers < 0.5 or not math.isfinite(outliers):
        raise InvalidSpec(f"{spec!r}: outliers must be a fraction in [0, 0.5), got {outliers}")
    if tile < 1:
        raise InvalidSpec(f"{spec!r}: tile must be >= 1, got {tile}")
    if name == "int":
        bits = kv.pop("bits", None)
        if kv:
            raise InvalidSpec(f"int format has no parameter(s) {sorted(kv)}")
        try:
            nb = int(bits) if bits is not None else -1
        except ValueError:
            nb = -1
        if not 2 <= nb <= 8:
            raise InvalidSpec(f"int format needs bits in 2..8, got {bits!r}")
        if scaling not in ("mse", "absmax"):
            raise InvalidSpec(f"int scaling must be 'mse' or 'absmax', got {scaling!r}")
        fmt = WeightFormat(kind="int", bits=nb, rht=rht, block=block, outliers=outliers, ldlq=use_ldlq,
                           scaling=scaling)
    elif name == "ternary" and not kv:
        fmt = WeightFormat(kind="ternary", rht=rht, block=block, outliers=outliers, ldlq=use_ldlq)
    else:
        if "scaling" in weight_kv:
            raise InvalidSpec(f"{spec!r}: 'scaling' applies to int formats only")
        if "rht" in kv or "seed" in kv:
            raise InvalidSpec(f"{spec!r}: rht/seed are weight-format keys here")
        qspec = name + (":" + ",".join(f"{k}={v}" for k, v in kv.items()) if kv else "")
        cls, qkw = quantizers.parse_spec(qspec)  # raises UnknownQuantizer / InvalidSpec
        probe = cls(**qkw)
        params = {k: v for k, v in probe.params().items() if k not in ("rht", "seed")}
        defaults_q = {k: v for k, v in cls().params().items() if k not in ("rht", "seed")}
        shown = {k: v for k, v in params.items() if k == "bits" or v != defaults_q.get(k)}
        qspec = cls.name + (":" + ",".join(f"{k}={_fmt(v)}" for k, v in shown.items()) if shown else "")
        fmt = WeightFormat(kind="vq", quantizer=qspec, rht=rht, block=block, outliers=outliers,
                           ldlq=use_ldlq, tile=tile)
    r, c = fmt.tile_shape()
    if fmt.block and fmt.block % c:
        raise InvalidSpec(f"{spec!r}: block={fmt.block} must be a multiple of the tile width {c}")
    return fmt


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


# ----------------------------------------------------------------------------- encoded tensors
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
) -> EncodedTensor:
    """Encode one tensor.  ``hessian`` (n × n input covariance, original domain) enables LDLQ."""
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
    if h_pad is None:
        symbols = codec.quantize(padded, s_full)
    else:
        parts: list[np.ndarray] = []

        def qblock(j: int, target: np.ndarray) -> np.ndarray:
            sym = codec.quantize(target, s_full[:, j * c:(j + 1) * c])
            parts.append(sym)
            return codec.dequantize(sym, m_pad, c) * s_full[:, j * c:(j + 1) * c]

        ldlq(padded, h_pad, qblock, c, damp=damp)
        symbols = np.concatenate(parts, axis=0) if codec.kind == "vq" else np.concatenate(parts, axis=1)
        meta["ldlq_damp"] = damp
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
    from ..rht import hadamard_size

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
        cs = _quantizer_proto(fmt.quantizer, r * c)._code_size()
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


# ----------------------------------------------------------------------------- packing
def pack_uint_rows(sym: np.ndarray, k: int) -> np.ndarray:
    """Pack k-bit values (uint8 (m, n), each < 2^k) into a little-endian bit stream per row.

    Value j of a row occupies bits [j·k, (j+1)·k) of the row's stream (LSB-first); rows are
    padded with zero values to a multiple of 8, so a row takes ``ceil(n/8)·k`` bytes.
    """
    m, n = sym.shape
    ng = -(-n // 8)
    v = np.zeros((m, ng * 8), dtype=np.uint64)
    v[:, :n] = sym
    v = v.reshape(m, ng, 8) << (np.arange(8, dtype=np.uint64) * np.uint64(k))
    word = np.bitwise_or.reduce(v, axis=2).astype("<u8")
    return np.ascontiguousarray(word.view(np.uint8).reshape(m, ng, 8)[:, :, :k].reshape(m, ng * k))


def unpack_uint_rows(packed: np.ndarray, k: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_uint_rows`: uint8 (m, ceil(n/8)·k) → uint8 (m, n)."""
    m = packed.shape[0]
    ng = -(-n // 8)
    if packed.shape[1] != ng * k:
        raise CorruptData(f"int{k} codes have {packed.shape[1]} bytes per row, expected {ng * k}")
    b = np.zeros((m, ng, 8), dtype=np.uint8)
    b[:, :, :k] = packed.reshape(m, ng, k)
    word = b.view("<u8").reshape(m, ng, 1)
    vals = (word >> (np.arange(8, dtype=np.uint64) * np.uint64(k))) & np.uint64((1 << k) - 1)
    return vals.reshape(m, ng * 8)[:, :n].astype(np.uint8)


_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)


def pack_trits_rows(t: np.ndarray) -> np.ndarray:
    """Trits in {−1, 0, 1} (int8 (m, n)) → 5 per byte per row: byte = Σ_i 3^i·(t_{5j+i} + 1)."""
    m, n = t.shape
    nb = -(-n // 5)
    digits = np.ones((m, nb * 5), dtype=np.uint8)
    digits[:, :n] = (t + 1).astype(np.uint8)
    return (digits.reshape(m, nb, 5) @ _POW3).astype(np.uint8)


@functools.cache
def _trit_table() -> np.ndarray:
    v = np.arange(243)
    return np.stack([(v // 3**i) % 3 for i in range(5)], axis=1).astype(np.int8) - 1


def unpack_trits_rows(packed: np.ndarray, n: int) -> np.ndarray:
    m, nb = packed.shape
    if nb != -(-n // 5) or (packed.size and packed.max() > 242):
        raise CorruptData("ternary codes are malformed (wrong width or a byte > 242)")
    return _trit_table()[packed].reshape(m, nb * 5)[:, :n]


# ----------------------------------------------------------------------------- decoding
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
