"""E8 lattice quantisers: QuIP#'s E8P codebook (2 bits, RVQ 3 and 4 bits) and scaled E8 balls.

Both families quantise 8-D blocks of the work vector (after the optional randomized Hadamard
transform).  The work dimension is the input (or RHT) dimension rounded **up to a multiple of
8** with zero padding; the padded coordinates are encoded like any other and dropped on decode,
so ``bits_per_dim`` (code bytes · 8 / d) counts them.

Scale (both families), chosen by ``scale=``:

* ``"global"`` (default): one factor fitted on the training data, ``s = target / RMS(x_train)``
  (RMS over the padded work vectors), so the codebook sees data with the RMS it was tuned for;
  stored in the state.
* ``"vector"``: per-vector factor ``s_i = target / RMS(x_i)``; its inverse is stored as a
  little-endian float16 in the last 2 bytes of each code (counted in ``code_size``).  Vectors
  whose RMS underflows float16 decode to zeros; RMS above 65504·target saturates.

The ``target`` RMS values and residual scales were measured on i.i.d. N(0,1) data (which is what
RHT'd data looks like), not copied: see :data:`E8P_TARGET_RMS`, :data:`E8P_RESIDUAL_SCALE` and
:data:`E8_BALL_TARGET_RMS`.

Code layouts (per vector, ``nb = d_work / 8`` blocks, then the optional float16 scale):

* ``e8p:bits=2`` — nb little-endian uint16 E8P codes (bit layout in :mod:`vqsearch.kernels.e8`);
* ``e8p:bits=3`` — nb uint16 stage-1 E8P codes, then nb uint8 indices into the 256-entry
  "E8 1-bit" table (stage 2 quantises ``ρ·(x − q1)``; reconstruction ``q1 + q2/ρ``);
* ``e8p:bits=4`` — nb uint16 stage-1 codes, then nb uint16 stage-2 E8P codes;
* ``e8:bits=R`` — nb indices of ``8R`` bits each into the E8 ball codebook, packed LSB-first
  into ``ceil(nb·8R/8)`` bytes.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidCodes, InvalidSpec
from ..kernels import e8 as _k
from ..kernels import e8_ball as _kb
from .base import Quantizer, check_choice
from .e8_codebook import (
    BALL_LUT_MAX_BITS,
    BALL_MAX_BITS,
    BALL_MIN_BITS,
    FACTORIALS,
    e8_ball_lut,
    e8_ball_tables,
    e8_one_bit_table,
    e8p_tables,
)
from .registry import register

#: RMS the first stage sees (codebook domain), per E8P rate.  Measured on 2^20 i.i.d. N(0,1)
#: scalars (seed 2024) with the exact encoder.  2 bits, MSE by target RMS: 1.00 → 0.09221,
#: 1.02 → 0.09182, 1.03 → 0.09174, 1.035 → 0.09173, 1.04 → 0.09174, 1.06 → 0.09194.
#: 3 and 4 bits: grid over (target, ρ), coarse (step 0.04 × 0.1–0.2) then fine (0.01 × 0.03–0.05):
#: 3 bits best (0.98, 2.04) → 0.02965 [(1.02, 2.04) → 0.02992, (0.98, 1.95) → 0.02979];
#: 4 bits best (0.89, 3.85) → 0.008374 [(0.93, 3.8) → 0.008506, (1.03, 3.4) → 0.009676, near QuIP#'s (1.03, 3.45)].
E8P_TARGET_RMS = {2: 1.035, 3: 0.98, 4: 0.89}
#: Residual scale ρ of the second stage (stage 2 quantises ρ·(x − q1), decode adds q2/ρ).
E8P_RESIDUAL_SCALE = {3: 2.04, 4: 3.85}

#: RMS the ball codebook sees, per code width in bits per 8-D block (8 … 32).  Measured: golden-
#: section search of the MSE of ``e8_ball_encode_rows`` on 2^20 i.i.d. N(0,1) scalars (seed 2024)
#: (overloads handled by the class search); the MSE at the optimum (rate: MSE) was
#: 1: 0.3203, 1.25: 0.2577, 1.5: 0.1764, 1.75: 0.1258, 2: 0.0913, 2.25: 0.0670, 2.5: 0.0487,
#: 2.75: 0.0357, 3: 0.0263, 3.25: 0.0193, 3.5: 0.0142, 3.75: 0.0104, 4: 0.0076
#: (overload rate 55 % at 1 bit/dim, 26 % at 2, 10 % at 3, 3.5 % at 4).
E8_BALL_TARGET_RMS: dict[int, float] = {
    8: 0.602, 9: 0.632, 10: 0.692, 11: 0.735, 12: 0.776, 13: 0.833,
    14: 0.896, 15: 0.950, 16: 1.022, 17: 1.093, 18: 1.173, 19: 1.259,
    20: 1.356, 21: 1.454, 22: 1.568, 23: 1.684, 24: 1.810, 25: 1.950,
    26: 2.100, 27: 2.262, 28: 2.431, 29: 2.624, 30: 2.828, 31: 3.047,
    32: 3.280,
}

_SCALES = ("global", "vector")
_F16_MAX = float(np.finfo(np.float16).max)


class _ScaledLattice(Quantizer):
    """Shared scale handling (global or per-vector float16) for the 8-D lattice quantisers."""

    min_train = 1

    def __init__(self, *, scale: str, rht: bool, seed: int) -> None:
        super().__init__(rht=rht, seed=seed)
        self.scale = check_choice("scale", scale, _SCALES)
        self._gscale = np.float32(1.0)

    # subclasses: codebook-domain RMS the first stage is tuned for
    def _target_rms(self) -> float:
        raise NotImplementedError

    def _work_dim(self, d_in: int) -> int:
        return 8 * math.ceil(d_in / 8)

    @property
    def _n_blocks(self) -> int:
        return self._d_work // 8

    def _scale_bytes(self) -> int:
        return 2 if self.scale == "vector" else 0

    def _rms(self, xw: np.ndarray, axis: int | None) -> np.ndarray:
        # Over the padded work vector: a block that is mostly padding (d < 8) then still sees
        # the target energy per block; for d ≥ 8 the difference is at most √(d_work/d).
        w = xw.astype(np.float64)
        return np.sqrt(np.mean(w * w, axis=axis))

    def _fit(self, xw: np.ndarray | None) -> None:
        if self.scale == "global":
            rms = float(self._rms(xw, None))
            self._gscale = np.float32(self._target_rms() / rms if rms > 0 else 1.0)

    def _encode_scales(self, xw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-row encode multipliers s (float32) and, for ``vector``, the stored float16 inverses."""
        n = xw.shape[0]
        if self.scale == "global":
            return np.full(n, self._gscale, dtype=np.float32), None
        inv = np.minimum(self._rms(xw, 1) / self._target_rms(), _F16_MAX).astype(np.float16)
        inv32 = inv.astype(np.float32)
        # Encode with exactly the inverse of the stored (rounded) value so decode is consistent.
        s = np.divide(1.0, inv32, out=np.zeros(n, dtype=np.float32), where=inv32 > 0)
        return s, inv

    def _decode_mults(self, codes: np.ndarray) -> np.ndarray:
        n = codes.shape[0]
        if self.scale == "global":
            return np.full(n, 1.0 / self._gscale, dtype=np.float32)
        mult = np.ascontiguousarray(codes[:, -2:]).view("<f2").reshape(n).astype(np.float32)
        if not np.isfinite(mult).all():
            bad = int(np.flatnonzero(~np.isfinite(mult))[0])
            raise InvalidCodes(f"{self.name} codes carry a non-finite float16 scale (first bad row: {bad})")
        return mult

    def _append_scale(self, body: np.ndarray, inv: np.ndarray | None) -> np.ndarray:
        if inv is None:
            return body
        return np.concatenate([body, inv.astype("<f2").view(np.uint8).reshape(-1, 2)], axis=1)

    def _state(self) -> dict[str, np.ndarray]:
        return {"gscale": np.array([self._gscale], dtype=np.float32)}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        g = arrays["gscale"]
        if g.shape != (1,) or not np.isfinite(g).all() or g[0] <= 0:
            raise ValueError(f"invalid global scale {g!r}")
        self._gscale = np.float32(g[0])


@register(aliases=("quip#", "e8p12"))
class E8P(_ScaledLattice):
    """QuIP#'s E8P codebook: 2 bits/dim (65 536 points of E8 + ¼), or 3/4 bits with a residual stage.

    Parameters
    ----------
    bits : {2, 3, 4}, default 2
        2 = E8P alone (16 bits per 8 values); 3 = E8P + the 256-entry "E8 1-bit" table on the
        scaled residual (24 bits); 4 = E8P + E8P on the scaled residual (32 bits).
    scale : {"global", "vector"}, default "global"
        One fitted factor, or a per-vector float16 factor stored in the code (+16 bits/vector).
    rht : bool, default False
        Randomized Hadamard transform before quantising (recommended for real embeddings and
        weights: it makes the coordinates near-Gaussian, which is what the scales are tuned for).
    seed : int, default 0
        Seed of the RHT signs.
    """

    name = "e8p"
    codec_id = 10
    description = "QuIP# E8P lattice codebook, 2 bits/dim (3, 4 with a residual stage)"

    def __init__(self, *, bits: int = 2, scale: str = "global", rht: bool = False, seed: int = 0) -> None:
        if isinstance(bits, bool) or bits not in (2, 3, 4):
            raise InvalidSpec(f"e8p: bits must be 2, 3 or 4, got {bits!r}")
        super().__init__(scale=scale, rht=rht, seed=seed)
        self.bits = int(bits)

    def _target_rms(self) -> float:
        return E8P_TARGET_RMS[self.bits]

    def weight_tile(self) -> tuple[int, int]:
        """One 8-value block of a weight row per code vector."""
        return (1, 8)

    def _code_size(self) -> int:
        return self._n_blocks * self.bits + self._scale_bytes()  # 8 values × bits / 8 bytes per block

    def _encode(self, xw: np.ndarray) -> np.ndarray:
        n, nb = xw.shape[0], self._n_blocks
        s, inv = self._encode_scales(xw)
        t64, t32, norm2, odd = e8p_tables()
        c1 = np.empty((n, nb), dtype=np.uint16)
        _k.e8p_encode_rows(xw, s, t64, norm2, odd, c1)
        parts = [c1.astype("<u2").view(np.uint8)]
        if self.bits > 2:
            rho = E8P_RESIDUAL_SCALE[self.bits]
            q1 = np.zeros_like(xw)
            _k.e8p_decode_rows(c1, t32, odd, np.ones(n, dtype=np.float32), q1)
            resid = np.ascontiguousarray((xw * s[:, None] - q1) * np.float32(rho))
            ones = np.ones(n, dtype=np.float32)
            if self.bits == 3:
                tab = e8_one_bit_table()
                c2 = np.empty((n, nb), dtype=np.uint8)
                _k.table_nearest_rows(resid, ones, tab, (tab * tab).sum(axis=1), c2)
                parts.append(c2)
            else:
                c2 = np.empty((n, nb), dtype=np.uint16)
                _k.e8p_encode_rows(resid, ones, t64, norm2, odd, c2)
                parts.append(c2.astype("<u2").view(np.uint8))
        return self._append_scale(np.concatenate(parts, axis=1), inv)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        n, nb = codes.shape[0], self._n_blocks
        mult = self._decode_mults(codes)
        _, t32, _, odd = e8p_tables()
        out = np.zeros((n, self._d_work), dtype=np.float32)
        c1 = codes[:, : 2 * nb].view("<u2")
        _k.e8p_decode_rows(c1, t32, odd, mult, out)
        if self.bits > 2:
            m2 = mult / np.float32(E8P_RESIDUAL_SCALE[self.bits])
            if self.bits == 3:
                _k.table_decode_rows(codes[:, 2 * nb: 3 * nb], _one_bit_f32(), m2, out)
            else:
                _k.e8p_decode_rows(codes[:, 2 * nb: 4 * nb].view("<u2"), t32, odd, m2, out)
        return out


def _one_bit_f32() -> np.ndarray:
    return e8_one_bit_table().astype(np.float32)


@register(aliases=("e8ball",))
class E8Ball(_ScaledLattice):
    """Scaled E8 lattice in a ball with a fixed-width index: any rate from 1 to 4 bits/dim.

    The codebook for rate R is the largest union of E8 shells with at most 2^(8R) points, filled
    up to exactly 2^(8R) with whole classes (and one truncated class) of the next shell
    (:func:`vqsearch.quantizers.e8_codebook.e8_ball_tables`).  Encoding finds the nearest E8 point
    of the scaled block (Conway–Sloane, exact); when it falls outside the codebook (overload) the
    nearest codeword is found exactly by a closed-form search over the codebook's classes
    (sorted matching of |y| with each leader, parity fix; see :mod:`vqsearch.kernels.e8`).  The
    point is then ranked to an ``8R``-bit index.  The point is then ranked to an ``8R``-bit index.

    Parameters
    ----------
    bits : float, default 2.0
        Rate in bits/dim; ``8·bits`` must be an integer in [8, 32] (so 1, 1.125, …, 4).
    scale, rht, seed
        As for :class:`E8P`.
    """

    name = "e8"
    codec_id = 11
    description = "E8 lattice ball with a fixed-width index, 1-4 bits/dim"

    def __init__(self, *, bits: float = 2.0, scale: str = "global", rht: bool = False, seed: int = 0) -> None:
        if isinstance(bits, bool) or not isinstance(bits, (int, float)):
            raise InvalidSpec(f"e8: bits must be a number, got {bits!r}")
        nbits = 8.0 * float(bits)
        if not (math.isfinite(nbits) and nbits == round(nbits) and BALL_MIN_BITS <= nbits <= BALL_MAX_BITS):
            raise InvalidSpec(
                f"e8: bits must be a multiple of 1/8 in [{BALL_MIN_BITS / 8:g}, {BALL_MAX_BITS / 8:g}], "
                f"got {bits!r}"
            )
        super().__init__(scale=scale, rht=rht, seed=seed)
        self.bits = float(bits)
        self._nbits = int(round(nbits))

    def _target_rms(self) -> float:
        return E8_BALL_TARGET_RMS[self._nbits]

    def weight_tile(self) -> tuple[int, int]:
        """The fewest 8-value blocks of a weight row whose indices fill whole bytes (2.25 bits: 4 blocks, 9 bytes)."""
        return (1, 8 * (8 // math.gcd(self._nbits, 8)))

    def _code_size(self) -> int:
        return (self._n_blocks * self._nbits + 7) // 8 + self._scale_bytes()

    def _encode(self, xw: np.ndarray) -> np.ndarray:
        n, nb = xw.shape[0], self._n_blocks
        s, inv = self._encode_scales(xw)
        t = e8_ball_tables(self._nbits)
        idx = np.empty((n, nb), dtype=np.int64)
        _kb.e8_ball_encode_rows(xw, s, t.keys, t.cid_by_key, t.offsets, t.leaders, t.nsign_log2,
                               FACTORIALS, idx)
        body = np.empty((n, (nb * self._nbits + 7) // 8), dtype=np.uint8)
        _k.pack_bits_rows(idx, self._nbits, body)
        return self._append_scale(body, inv)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        n, nb = codes.shape[0], self._n_blocks
        mult = self._decode_mults(codes)
        t = e8_ball_tables(self._nbits)
        idx = np.empty((n, nb), dtype=np.int64)
        _k.unpack_bits_rows(codes, self._nbits, idx)
        out = np.empty((n, self._d_work), dtype=np.float32)
        if self._nbits <= BALL_LUT_MAX_BITS:
            bad = _kb.e8_lut_decode_rows(idx, e8_ball_lut(self._nbits), mult, out)
        else:
            bad = _kb.e8_ball_decode_rows(idx, t.offsets, t.leaders, t.nsign_log2, FACTORIALS, mult, out)
        if bad:
            raise InvalidCodes(f"e8:bits={self.bits:g}: {bad} block indices exceed the codebook size {t.size}")
        return out
