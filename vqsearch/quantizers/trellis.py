"""QTIP bitshift-trellis quantiser (Tseng, Sun, Hou, De Sa, NeurIPS 2024).

Construction (``quantizers.md`` §2).  A block of ``T`` values is coded as one closed
(tail-biting) walk on the bitshift trellis with ``2^L`` states: each step shifts ``k·V``
fresh bits into an ``L``-bit state, ``s_t = (s_{t-1} << kV) mod 2^L | b_t``, and emits
the ``V`` values ``γ·c(s_t)``.  The block's code is the circular bitstream of exactly
``k·T`` bits (every state is the ``L``-bit window at bit ``t·kV``), i.e. exactly ``k``
bits per value.  Encoding is a Viterbi search for the minimum squared-error path
(:mod:`vqsearch.kernels.trellis`); decoding is a table lookup per value.

State-to-value codes ``c(s)`` (``code=``):

* ``"1mad"`` (V = 1): byte sum of the LCG output ``34038481·s + 76625530 mod 2^32``,
  centred and divided by 147.8 — a computed, approximately N(0, 1) code;
* ``"3inst"`` (V = 1): LCG ``89226354·s + 64248484``, masked with ``0x8FFF8FFF``, XOR
  ``0x3B603B60``, sum of the two halves read as float16 (std 1.244);
* ``"lut"`` (V = 1 or 2): a pseudo-random Gaussian table — the exact N(0, 1) quantiles at
  ``(r + ½)/2^L`` assigned to states in a fixed hashed order (the "random Gaussian
  codebook" quality reference, generated deterministically, not stored);
* ``"hyb"`` (V = 2, L ≥ 10): QTIP's hybrid code, ``h = s(s+1) mod 2^32``, index = bits
  ``L−10 … L−2`` of ``h`` into a 512 × 2 k-means table of the 2-D Gaussian, first
  coordinate negated when bit ``L−1`` of ``h`` is set (the 4 KiB table is stored).

Tail-biting (QTIP's two-pass approximation, their Algorithm 4): pass 1 runs a free
Viterbi over the block rotated by half, so that value 0 sits in the middle, and reads the
high ``L − kV`` bits of the state that codes value 0; pass 2 reruns Viterbi on the block
with the first state's high bits and the last state's low bits pinned to that overlap.
On every block we checked (48 at L = 10, 16 at L = 12, k = 2) this equals the exact
tail-biting optimum, the minimum over all ``2^(L−kV)`` overlaps.  ``tail_window = W``
trades quality for speed: pass 1 then sees only ``W`` steps each side of value 0
(1 + 2W/n instead of 2 Viterbi passes; +0.6-0.8 % MSE at L = 16 for W = 64).

Scale (``scale=``): the data is coded as ``x ≈ a · c(s)``.

* ``"global"`` (default, exactly ``k`` bits/value): ``a = γ·RMS(training data)``, one
  float stored in the state — QTIP's per-tensor scale;
* ``"vector"``: per row, ``x/RMS(row)`` is coded, then ``a`` is the least-squares gain of
  the chosen path, stored as float32 (+32 bits per vector);
* ``"block"``: the same per block of ``T`` values, stored as float16 (+16 bits per block,
  0.0625 bit/value at T = 256; blocks whose RMS is far below 6e-5 lose precision).

Layout.  The (RHT-rotated) row of length ``d_in`` is zero-padded to ``nblocks·T_eff``
where ``nblocks = ceil(d_in / T)`` and ``T_eff = 8·ceil(d_in / (8·nblocks)) ≤ T`` (equal
blocks, multiples of 8 so that each block is whole bytes; padding < 8 per block, except
that a block holds at least ``L`` bits, which only matters for rows shorter than ``L/k``).  A code
row is the blocks' bitstreams back to back, then the scales (little-endian).
"""

from __future__ import annotations

import functools
import logging
from statistics import NormalDist
from typing import Literal

import numba
import numpy as np

from ..errors import DimensionMismatch, InvalidInput, InvalidSpec
from ..kernels.trellis import decode_blocks, ip_pairs_blocks, unpack_states, viterbi_encode
from ..kernels.trellis import pack_states as _pack_states_kernel
from .base import Quantizer, check_choice
from .registry import register

log = logging.getLogger(__name__)

CodeName = Literal["1mad", "3inst", "lut", "hyb"]
ScaleMode = Literal["global", "vector", "block"]

_CODES = ("1mad", "3inst", "lut", "hyb")
_SCALES = ("global", "vector", "block")
_MAX_L = 20
#: Largest back-pointer table per thread (bytes); bounds L, T and k together.
_MAX_BACKPOINTER_BYTES = 1 << 28
_HYB_Q = 9

#: Default code gain γ per (code, k, V) in raw code units (unit-RMS data is coded with the
#: values γ·c(s)).  Chosen by scanning γ in steps of ~2-6 % on N(0, 1) at L = 16, T = 256
#: (2^15-2^16 scalars per point, paired data; the MSE curve is flat to ±0.3 % within one
#: step of the optimum).  More bits want a larger gain: the search can always use the
#: code's many small values, so stretching the range costs little.
_DEFAULT_GAIN: dict[tuple[str, int, int], float] = {
    ("1mad", 1, 1): 0.90, ("1mad", 2, 1): 1.02, ("1mad", 3, 1): 1.06, ("1mad", 4, 1): 1.12,
    ("3inst", 1, 1): 0.70, ("3inst", 2, 1): 0.82, ("3inst", 3, 1): 0.87, ("3inst", 4, 1): 0.89,
    ("lut", 1, 1): 0.88, ("lut", 2, 1): 1.00, ("lut", 3, 1): 1.06, ("lut", 4, 1): 1.08,
    ("lut", 1, 2): 0.88, ("lut", 2, 2): 1.00, ("lut", 3, 2): 1.06, ("lut", 4, 2): 1.12,
    ("hyb", 1, 2): 0.90, ("hyb", 2, 2): 1.00, ("hyb", 3, 2): 1.12, ("hyb", 4, 2): 1.24,
}

#: Pass-1 context (steps each side of value 0) for tail-biting; 0 = QTIP's full rotation.
#: Measured at k = 2 (MSE increase vs full rotation): W = 64 → +0.1 % at L = 12 and +0.6-0.8 %
#: at L = 16 for 1.5 instead of 2 Viterbi passes; W = 32 → +0.5 % / +1.4 %.
_TAIL_WINDOW = 0
#: Viterbi work units per thread (dynamic scheduling evens out cores shared with other jobs).
_CHUNKS_PER_THREAD = 4


# --------------------------------------------------------------------------- codes
def _lcg(L: int, a: int, b: int) -> np.ndarray:
    s = np.arange(1 << L, dtype=np.uint64)
    return ((np.uint64(a) * s + np.uint64(b)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def code_1mad(L: int) -> np.ndarray:
    """1MAD code of every L-bit state, float32 (2^L,): (bytesum(LCG(s)) − 510) / 147.800537109375."""
    x = _lcg(L, 34038481, 76625530).astype(np.int64)
    total = (x & 255) + ((x >> 8) & 255) + ((x >> 16) & 255) + (x >> 24)
    return ((total - 510).astype(np.float64) / 147.800537109375).astype(np.float32)


def code_3inst(L: int) -> np.ndarray:
    """3INST code of every L-bit state, float32 (2^L,): sum of the two fp16 halves of the masked LCG."""
    x = _lcg(L, 89226354, 64248484)
    r = (x & np.uint32(0x8FFF8FFF)) ^ np.uint32(0x3B603B60)
    hi = (r >> np.uint32(16)).astype(np.uint16).view(np.float16).astype(np.float32)
    lo = (r & np.uint32(0xFFFF)).astype(np.uint16).view(np.float16).astype(np.float32)
    return hi + lo


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 (wrapping arithmetic): a fixed, platform-independent hash."""
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@functools.cache
def _gaussian_quantiles(n: int) -> np.ndarray:
    nd = NormalDist()
    return np.array([nd.inv_cdf((r + 0.5) / n) for r in range(n)], dtype=np.float64)


def code_lut(L: int, V: int) -> np.ndarray:
    """Deterministic Gaussian table, float32 (V, 2^L): column v holds the N(0,1) quantiles in hashed order."""
    n = 1 << L
    q = _gaussian_quantiles(n)
    out = np.empty((V, n), dtype=np.float32)
    idx = np.arange(n, dtype=np.uint64)
    for v in range(V):
        key = _splitmix64(idx + np.uint64((v + 1) << 40))
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(key, kind="stable")] = np.arange(n)
        out[v] = q[rank]
    return out


@functools.cache
def _hyb_table() -> np.ndarray:
    """512 × 2 k-means centres of the 2-D standard normal (faiss, fixed seed), unit RMS, float32."""
    import faiss

    n = 1 << 17
    idx = np.arange(n, dtype=np.uint64)
    # Uniforms from the hash (top 53 bits), then Box–Muller: fixed samples, no RNG state.
    u1 = ((_splitmix64(idx) >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    u2 = ((_splitmix64(idx + np.uint64(1 << 40)) >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    r = np.sqrt(-2.0 * np.log(u1))
    pts = np.stack([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)], axis=1).astype(np.float32)
    km = faiss.Kmeans(2, 1 << _HYB_Q, niter=40, seed=1234, verbose=False)
    km.train(pts)
    c = km.centroids.astype(np.float64)
    c /= np.sqrt(np.mean(c**2))
    out = c.astype(np.float32)
    out.flags.writeable = False
    return out


def code_hyb(L: int, table: np.ndarray) -> np.ndarray:
    """HYB code, float32 (2, 2^L): ``table[(h >> (L−Q−1)) mod 2^Q]``, first coordinate × (−1)^bit_{L−1}(h)."""
    s = np.arange(1 << L, dtype=np.uint64)
    h = (s * (s + np.uint64(1))) & np.uint64(0xFFFFFFFF)
    index = ((h >> np.uint64(L - _HYB_Q - 1)) & np.uint64((1 << _HYB_Q) - 1)).astype(np.int64)
    sign = 1.0 - 2.0 * ((h >> np.uint64(L - 1)) & np.uint64(1)).astype(np.float32)
    out = table[index].T.copy()
    out[0] *= sign
    return out


@functools.cache
def _shared_table(code: str, L: int, V: int) -> np.ndarray:
    """Read-only (V, 2^L) table of a data-independent code, built once per process."""
    if code == "1mad":
        out = code_1mad(L)[None, :]
    elif code == "3inst":
        out = code_3inst(L)[None, :]
    else:
        out = code_lut(L, V)
    out = np.ascontiguousarray(out, dtype=np.float32)
    out.flags.writeable = False
    return out


# --------------------------------------------------------------------------- quantiser
@register(aliases=("qtip", "tcq"))
class TrellisQuantizer(Quantizer):
    """QTIP bitshift-trellis quantiser: ``k`` bits per value, Viterbi-encoded blocks of ``T``.

    Parameters
    ----------
    bits : int, default 2
        ``k``, bits per value, 1…4.  MSE on N(0, 1) at L = 16 (1MAD): 0.268 / 0.0686 / 0.0175 / 0.0045.
    L : int, default 16
        State bits.  Quality grows and encode speed falls with ``L``: each value costs two
        Viterbi steps over 2^L states, so encoding time grows about ∝ 2^L (encode throughput per
        ``L``: benchmarks/RESULTS.md, section 1).  MSE at k = 2: 0.0743 (L = 12), 0.0704 (14),
        0.0686 (16); for bulk weight compression L = 14 is the usual compromise.  Decoding speed
        does not depend on ``L`` beyond the 2^L-entry table.  Valid ``k·V < L ≤ 20``.
    V : int, default 1
        Values per trellis step (``"hyb"`` needs 2; ``"1mad"``/``"3inst"`` need 1).
    T : int, default 256
        Block (trellis) length in values, a multiple of 8 with ``T·k ≥ L``.  MSE is flat for
        T ≥ 256 and 2 % worse at T = 64 (L = 12, k = 2); shorter blocks bound the padding of
        short rows.
    code : {"1mad", "3inst", "lut", "hyb"}, default "1mad"
        State-to-value code (module docstring).
    scale : {"global", "vector", "block"}, default "global"
        Where the scale lives (module docstring): global = exactly ``k`` bits/value.
    gain : float, default 0 (= tuned default for the code and ``k``)
        Code gain γ: values are coded as ``a·c(s)`` with ``a = γ·RMS``.
    tail_window : int, default 0
        Steps of context each side of value 0 for the tail-biting pass 1; 0 = QTIP's full
        rotation (best).  64 runs 1 + 2·64/n instead of 2 Viterbi passes for +0.6-0.8 % MSE at
        L = 16 (see ``_TAIL_WINDOW``).
    rht, seed
        Randomised Hadamard transform before quantising (recommended for real data).

    Examples
    --------
    >>> import numpy as np
    >>> from vqsearch import quantizers
    >>> x = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    >>> q = quantizers.get("trellis:bits=2,L=10").fit(x)
    >>> codes = q.encode(x)
    >>> codes.shape, q.bits_per_dim
    ((4, 64), 2.0)
    >>> bool(np.mean((q.decode(codes) - x) ** 2) < 0.09)
    True
    """

    name = "trellis"
    codec_id = 20
    description = "QTIP bitshift trellis (L-bit states, Viterbi, tail-biting), k = 1-4 bits/value"
    data_free = False
    min_train = 1
    #: Weight matrices hold millions of blocks, and encoding time grows with 2^L: a shorter trellis
    #: compresses a whole model in minutes instead of many (benchmarks/RESULTS.md §4 measures the
    #: default and L = 16 on MiniLM).  Embeddings keep L = 16.
    weight_defaults = {"L": 12}

    def __init__(self, *, bits: int = 2, L: int = 16, V: int = 1, T: int = 256, code: CodeName = "1mad",
                 scale: ScaleMode = "global", gain: float = 0.0, tail_window: int = _TAIL_WINDOW,
                 rht: bool = False, seed: int = 0) -> None:
        super().__init__(rht=rht, seed=seed)
        self.bits = _as_int("bits", bits)
        self.L = _as_int("L", L)
        self.V = _as_int("V", V)
        self.T = _as_int("T", T)
        self.code = check_choice("code", code, _CODES)
        self.scale = check_choice("scale", scale, _SCALES)
        self.gain = float(gain)
        self.tail_window = _as_int("tail_window", tail_window)
        check_choice("bits", self.bits, (1, 2, 3, 4))
        check_choice("V", self.V, (1, 2))
        kv = self.bits * self.V
        if not kv < self.L <= _MAX_L:
            raise InvalidSpec(f"L must satisfy k·V = {kv} < L <= {_MAX_L}, got L={self.L}")
        if self.T < 8 or self.T % 8:
            raise InvalidSpec(f"T must be a positive multiple of 8, got {self.T}")
        if self.T * self.bits < self.L:
            raise InvalidSpec(f"a block must hold at least L bits: T·k = {self.T * self.bits} < L = {self.L}")
        if self.code in ("1mad", "3inst") and self.V != 1:
            raise InvalidSpec(f"code {self.code!r} emits one value per state: needs V=1, got V={self.V}")
        if self.code == "hyb" and (self.V != 2 or self.L < _HYB_Q + 1):
            raise InvalidSpec(f"code 'hyb' needs V=2 and L >= {_HYB_Q + 1}, got V={self.V}, L={self.L}")
        if (self.T // self.V) << (self.L - kv) > _MAX_BACKPOINTER_BYTES:
            raise InvalidSpec(f"T={self.T}, L={self.L} need {(self.T // self.V) << (self.L - kv):,} bytes of "
                              f"back-pointers per thread (limit {_MAX_BACKPOINTER_BYTES:,}): lower T or L")
        if not (self.gain >= 0 and np.isfinite(self.gain)):
            raise InvalidSpec(f"gain must be a finite number >= 0 (0 = tuned default), got {gain!r}")
        if self.tail_window < 0:
            raise InvalidSpec(f"tail_window must be >= 0, got {self.tail_window}")
        self._unit: np.ndarray | None = None  # built on first use (cached per code and L)
        self._hyb: np.ndarray | None = None
        self._global = np.float32(1.0)
        self._nblocks = 0
        self._block = 0

    # ------------------------------------------------------------------ geometry
    @property
    def kv(self) -> int:
        """Bits shifted in per trellis step (``k·V``)."""
        return self.bits * self.V

    @property
    def effective_gain(self) -> float:
        """The code gain γ in use (the tuned default when ``gain=0``)."""
        return self.gain if self.gain > 0 else default_gain(self.code, self.bits, self.V)

    def weight_tile(self) -> tuple[int, int]:
        """QTIP's layout: a block of T values covers 16 columns × T/16 rows of a weight matrix.

        Narrow tiles keep the Hessian-aware rounding's column blocks (:mod:`vqsearch.weights.ldlq`)
        at 16 columns however long the trellis block is.
        """
        if self.T % 16:
            raise InvalidSpec(f"trellis weights need T to be a multiple of 16 (16-column tiles), got {self.T}")
        return (self.T // 16, 16)

    def _work_dim(self, d_in: int) -> int:
        self._d_real = d_in
        self._nblocks = -(-d_in // self.T)
        # Whole bytes per block, and at least L bits so that every overlap is reachable.
        min_block = 8 * -(-self.L // (8 * self.bits))
        self._block = max(8 * -(-d_in // (8 * self._nblocks)), min_block)
        return self._nblocks * self._block

    @property
    def block_shape(self) -> tuple[int, int]:
        """(blocks per row, values per block) after padding."""
        self._require_fitted()
        return self._nblocks, self._block

    def _block_bytes(self) -> int:
        return self._block * self.bits // 8

    def _scale_bytes(self) -> int:
        return {"global": 0, "vector": 4, "block": 2 * self._nblocks}[self.scale]

    def _code_size(self) -> int:
        return self._nblocks * self._block_bytes() + self._scale_bytes()

    # ------------------------------------------------------------------ tables
    def _unit_table(self) -> np.ndarray:
        if self.code != "hyb":
            return _shared_table(self.code, self.L, self.V)
        out = code_hyb(self.L, self._hyb if self._hyb is not None else _hyb_table())
        out.flags.writeable = False
        return out

    @property
    def table(self) -> np.ndarray:
        """Unit code values ``c(s)``, float32 (V, 2^L) (the decoder multiplies by the scale ``a``)."""
        if self._unit is None:
            self._unit = self._unit_table()
        return self._unit

    # ------------------------------------------------------------------ protocol
    def _fit(self, xw: np.ndarray) -> None:
        if self.code == "hyb" and self._hyb is None:
            self._hyb = _hyb_table()
            self._unit = self._unit_table()
        real = xw[:, : self._d_real].astype(np.float64)
        rms = float(np.sqrt(np.mean(real**2))) if real.size else 0.0
        if self.scale == "global" and rms == 0.0:
            log.warning("trellis: training data is all zeros; using unit scale")
        self._global = np.float32(self.effective_gain * (rms if rms > 0 else 1.0))

    def _state(self) -> dict[str, np.ndarray]:
        out = {"global_scale": np.array([self._global], dtype=np.float32)}
        if self.code == "hyb":
            out["hyb_table"] = np.ascontiguousarray(self._hyb, dtype=np.float32)
        return out

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        g = arrays["global_scale"]
        if g.shape != (1,) or g.dtype != np.float32 or not np.isfinite(g).all():
            raise ValueError("global_scale must be one finite float32")
        self._global = np.float32(g[0])
        if self.code == "hyb":
            t = arrays["hyb_table"]
            if t.shape != (1 << _HYB_Q, 2) or t.dtype != np.float32 or not np.isfinite(t).all():
                raise ValueError(f"hyb_table must be finite float32 ({1 << _HYB_Q}, 2)")
            self._hyb = t
            self._unit = self._unit_table()

    def encode_states(self, xw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Viterbi-encode work-domain rows: (states int32 (n·nblocks, steps), scales float32 (n·nblocks,)).

        ``xw`` is float32 (n, d_work) as returned by :meth:`to_work` (RHT and padding applied).
        Each block is reconstructed as ``scales[i] · table[:, states[i]]``; the states form a
        tail-biting path, so :func:`vqsearch.kernels.trellis.pack_states` stores them losslessly.
        """
        self._require_fitted()
        if xw.ndim != 2 or xw.shape[1] != self._d_work:
            raise DimensionMismatch(f"work rows must have width {self._d_work}, got shape {xw.shape}")
        nb, T = xw.shape[0] * self._nblocks, self._block
        blocks = np.ascontiguousarray(xw, dtype=np.float32).reshape(nb, T)
        gamma = self.effective_gain
        norm = np.full(nb, self._global, dtype=np.float32)
        if self.scale == "global":
            target_table = (self.table * self._global).astype(np.float32)
            xs = blocks
        else:
            if self.scale == "vector":
                rms = np.sqrt(np.mean(xw[:, : self._d_real].astype(np.float64) ** 2, axis=1))
                rms = np.repeat(rms, self._nblocks)
            else:
                rms = np.sqrt(np.mean(blocks.astype(np.float64) ** 2, axis=1))
            safe = np.where(rms > 0, rms, 1.0)
            xs = (blocks / safe[:, None]).astype(np.float32)
            target_table = (self.table * np.float32(gamma)).astype(np.float32)
        states = tail_biting_viterbi(xs, target_table, self.L, self.kv, self.tail_window)
        if self.scale != "global":
            norm = self._refit_scales(blocks, states)
        return states, norm

    def _refit_scales(self, blocks: np.ndarray, states: np.ndarray) -> np.ndarray:
        """Least-squares gain of each chosen path: a = ⟨x, c⟩ / ⟨c, c⟩ per block or per row."""
        c = self.table[:, states]  # (V, nb, steps)
        c = np.moveaxis(c, 0, -1).reshape(blocks.shape).astype(np.float64)
        # Padding columns are not data: they must not pull the gain towards zero.
        real = np.zeros(self._d_work, dtype=np.float64)
        real[: self._d_real] = 1.0
        c *= np.tile(real.reshape(self._nblocks, self._block), (blocks.shape[0] // self._nblocks, 1))
        xc = np.einsum("ij,ij->i", blocks.astype(np.float64), c)
        cc = np.einsum("ij,ij->i", c, c)
        if self.scale == "vector":
            xc = xc.reshape(-1, self._nblocks).sum(axis=1)
            cc = cc.reshape(-1, self._nblocks).sum(axis=1)
        a = np.where(cc > 0, xc / np.where(cc > 0, cc, 1.0), 0.0)
        if self.scale == "block":
            if np.abs(a).max(initial=0.0) > float(np.finfo(np.float16).max):
                raise InvalidInput("trellis: a block scale overflows float16; use scale='vector' or 'global'")
            return a.astype(np.float16).astype(np.float32)
        return np.repeat(a.astype(np.float32), self._nblocks)

    def _encode(self, xw: np.ndarray) -> np.ndarray:
        n = xw.shape[0]
        states, scales = self.encode_states(xw)
        bb = self._block_bytes()
        bits = np.empty((states.shape[0], bb), dtype=np.uint8)
        _pack_states_kernel(states, self.L, self.kv, bits)
        out = np.empty((n, self._code_size()), dtype=np.uint8)
        nbits = self._nblocks * bb
        out[:, :nbits] = bits.reshape(n, nbits)
        if self.scale == "vector":
            out[:, nbits:] = scales[:: self._nblocks].astype("<f4").view(np.uint8).reshape(n, 4)
        elif self.scale == "block":
            out[:, nbits:] = scales.astype("<f2").view(np.uint8).reshape(n, 2 * self._nblocks)
        return out

    def _scales_of(self, codes: np.ndarray) -> np.ndarray:
        n = codes.shape[0]
        nbits = self._nblocks * self._block_bytes()
        if self.scale == "global":
            return np.full(n * self._nblocks, self._global, dtype=np.float32)
        raw = np.ascontiguousarray(codes[:, nbits:])
        if self.scale == "vector":
            return np.repeat(raw.view("<f4").reshape(n).astype(np.float32), self._nblocks)
        return raw.view("<f2").reshape(n * self._nblocks).astype(np.float32)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        n = codes.shape[0]
        bb = self._block_bytes()
        bits = np.ascontiguousarray(codes[:, : self._nblocks * bb]).reshape(n * self._nblocks, bb)
        out = np.empty((n * self._nblocks, self._block), dtype=np.float32)
        # Dynamic chunks of blocks, so a thread that loses its core does not stall the call.
        with numba.parallel_chunksize(max(1, bits.shape[0] // (8 * numba.get_num_threads()))):
            decode_blocks(bits, self.table, self.L, self.kv, self._scales_of(codes), out)
        return out.reshape(n, self._nblocks * self._block)

    def ip_pairs(self, work_queries: np.ndarray, query_of_pair: np.ndarray, codes: np.ndarray,
                 row_of_pair: np.ndarray) -> np.ndarray:
        """Fused rescoring (:func:`~vqsearch.kernels.trellis.ip_pairs_blocks`): each distinct row is decoded once
        into an L1-resident buffer and dotted with the queries that refer to it."""
        from .._validation import as_code_matrix

        self._require_fitted()
        codes = as_code_matrix(codes, code_size=self._code_size())
        n = codes.shape[0]
        if n == 0 or query_of_pair.size == 0:
            return np.zeros(query_of_pair.size, dtype=np.float32)
        block_bytes = self._block_bytes()
        bits = np.ascontiguousarray(codes[:, : self._nblocks * block_bytes]).reshape(n * self._nblocks, block_bytes)
        return ip_pairs_blocks(np.ascontiguousarray(work_queries, dtype=np.float32),
                               np.ascontiguousarray(query_of_pair, dtype=np.int64), bits,
                               np.ascontiguousarray(row_of_pair, dtype=np.int64), self.table, self.L, self.kv,
                               self._scales_of(codes), self._nblocks)

    def decode_states(self, codes: np.ndarray) -> np.ndarray:
        """Trellis states of every block, int32 (n·nblocks, steps), read back from packed codes."""
        from .._validation import as_code_matrix

        self._require_fitted()
        codes = as_code_matrix(codes, code_size=self._code_size())
        bb = self._block_bytes()
        bits = np.ascontiguousarray(codes[:, : self._nblocks * bb]).reshape(-1, bb)
        out = np.empty((bits.shape[0], self._block // self.V), dtype=np.int32)
        unpack_states(bits, self.L, self.kv, self._block // self.V, out)
        return out


def default_gain(code: str, bits: int, V: int) -> float:
    """Tuned code gain γ for ``code`` at ``bits`` (see ``_DEFAULT_GAIN``); 1.0 when not tuned."""
    return _DEFAULT_GAIN.get((code, bits, V), 1.0)


def _viterbi(x: np.ndarray, vals: np.ndarray, L: int, kv: int, start: np.ndarray | None = None,
             end: np.ndarray | None = None) -> np.ndarray:
    nb, width = x.shape
    free = np.full(nb, -1, dtype=np.int64)
    states = np.empty((nb, width // vals.shape[0]), dtype=np.int32)
    nchunks = _CHUNKS_PER_THREAD * numba.get_num_threads()
    with numba.parallel_chunksize(1):
        viterbi_encode(np.ascontiguousarray(x, dtype=np.float32), vals, L, kv,
                       free if start is None else start.astype(np.int64),
                       free if end is None else end.astype(np.int64), states, nchunks)
    return states


def tail_biting_viterbi(x: np.ndarray, vals: np.ndarray, L: int, kv: int, window: int = 0,
                        refine: int = 0) -> np.ndarray:
    """Tail-biting minimum-error paths of blocks ``x`` (float32 (nb, n·V)) → int32 states (nb, n).

    QTIP's two-pass approximation (module docstring): pass 1 finds the overlap bits from
    a free Viterbi over the block rotated by half (``window=0``) or over only ``window``
    steps each side of value 0; pass 2 is the Viterbi constrained to that overlap.  Each
    of the ``refine`` extra passes rotates the block by half and re-runs the constrained
    Viterbi with the seam taken from the current path; that path stays feasible, so the
    cost never increases.
    """
    V = vals.shape[0]
    n = x.shape[1] // V
    half = n // 2 if window <= 0 else max(1, min(window, n // 2))
    # Steps [n - half, n) then [0, half): step `half` of this sequence codes value 0.
    pass1 = np.concatenate([x[:, (n - half) * V:], x[:, : half * V]], axis=1)
    overlap = _viterbi(pass1, vals, L, kv)[:, half] >> kv
    states = _viterbi(x, vals, L, kv, overlap, overlap)
    shift = n // 2
    for _ in range(refine):
        # The block is circular: code it from step `shift` on, seam pinned to the current path.
        overlap = states[:, shift] >> kv
        rot = _viterbi(np.roll(x, -shift * V, axis=1), vals, L, kv, overlap, overlap)
        states = np.ascontiguousarray(np.roll(rot, shift, axis=1))
    return states


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidSpec(f"{name} must be an integer, got {value!r}")
    return int(value)
