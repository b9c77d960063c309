"""1.58-bit ternary codes {−1, 0, +1} with one float32 scale per vector: ``ternary``.

Which coordinates become 0 (``mode``; t = ternary vector, x = work vector of dimension D):

* ``"topk"`` — Ultra-Quantisation (Connor, Dearle & Claydon 2025): the ``k = round(nonzero·D)``
  largest |x_i| get sign(x_i), the rest 0 — the nearest (in angle) vertex of the polytope of
  ternary vectors with k non-zeros.  ``nonzero = 0.54`` is the analytic optimum for Gaussian
  coordinates (threshold 0.612σ keeps 54 % of them; cos(x, t) = 0.8999); RHT makes embedding
  coordinates close to Gaussian.  Scale α = ⟨x, t⟩/⟨t, t⟩ (the MSE-optimal level).
* ``"optimal"`` — MSE-optimal 3-level quantiser for Gaussian data: |x_i| > 0.612·rms(x) becomes
  ±1 (N(0,1): 45.9 % zeros, MSE 0.1902).  Scale α = ⟨x, t⟩/⟨t, t⟩.
* ``"absmean"`` — BitNet b1.58 (Ma et al. 2024) rule for weights, per vector: γ = mean|x|,
  t = clip(round(x/γ), −1, 1), dequantised as γ·t (the BitNet scale, *not* refitted: N(0,1)
  MSE 0.2633; refitting the level would give 0.213 but would no longer be BitNet's format).

Packing (``packing``):

* ``"bitplanes"`` (default, for search): plane P (bit set where t = +1) then plane N (t = −1),
  each ``ceil(D/8)`` bytes packed like ``binary`` (``np.packbits`` big bit order, padding 0),
  then the float32 scale: ``code_size = 2·ceil(D/8) + 4`` (2 bits/dim + 32 bits/vector).
  Symmetric scoring is a popcount over plane ANDs (:meth:`Ternary.ternary_dot`).
* ``"base3"`` (dense, for storage): 5 trits per byte, byte = Σ_{i<5} 3^i·(t_{5j+i} + 1) ≤ 242
  (coordinate 5j in the least significant trit; padding trits encode 0), then the scale:
  ``code_size = ceil(D/5) + 4`` (1.6 bits/dim).  Search unpacks to bitplanes first.

Round trip: re-encoding a decoded point α·t gives the same t and α for ``topk`` and
``optimal`` (support and signs are preserved, zeros stay zero), so decode∘encode is idempotent
on decoded points (with an invertible work transform, as for the other families).  For
``absmean`` the codes t are reproduced but the scale is not a fixed point: γ' = γ·nnz(t)/D, so
the decoded point shrinks on each pass (BitNet's γ is not the MSE-optimal level).
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np

from .. import parallel
from .._validation import as_code_matrix
from ..errors import InvalidCodes, InvalidSpec
from ..kernels.popcount import ternary_dot_u64, ternary_dot_u64_serial
from ..kernels.pq import adc_scan
from .base import Quantizer, ScanTerms, check_choice
from .binary import pack_words, query_luts, tail_mask
from .registry import register

ModeLike = Literal["topk", "absmean", "optimal"]
PackingLike = Literal["bitplanes", "base3"]

#: Threshold of the MSE-optimal 3-level quantiser of N(0,1), in units of the RMS.
OPTIMAL_THRESHOLD = 0.612
_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)


@functools.cache
def _trit_table() -> np.ndarray:
    """(243, 5) int8: the five balanced trits (−1, 0, +1) of every valid base-3 byte."""
    v = np.arange(243)
    return np.stack([(v // 3**i) % 3 for i in range(5)], axis=1).astype(np.int8) - 1


@register(aliases=("ternary158", "1.58bit"))
class Ternary(Quantizer):
    """Ternary {−1, 0, +1} codes with a per-vector float32 scale.

    Parameters
    ----------
    rht : bool, default True
        Randomized Hadamard transform first.  On by default: ``topk``'s 0.54 and ``optimal``'s
        0.612·rms are optimal for Gaussian coordinates, which the RHT produces from embedding
        or weight rows with outlier dimensions.
    seed : int, default 0
        Seed of the RHT signs.
    mode : {"topk", "optimal", "absmean"}, default "topk"
        Which coordinates become 0 (see the module docstring).  "topk" for embeddings (fixed
        number of non-zeros, so ranking by the ternary dot equals ranking by Euclidean distance
        between codes), "absmean" to reproduce BitNet b1.58 weights, "optimal" for the lowest MSE
        with a per-vector threshold.
    nonzero : float, default 0.54
        Fraction of non-zero coordinates for "topk", in (0, 1].  1.0 is sign binarisation;
        0.5 is the "cube-octahedron" code.  Ignored by the other modes.
    packing : {"bitplanes", "base3"}, default "bitplanes"
        Storage layout (see the module docstring): bitplanes are 2 bits/dim and scored with
        popcounts; base3 is 1.6 bits/dim and must be unpacked to score.
    """

    name = "ternary"
    codec_id = 4
    description = "1.58-bit {-1,0,+1} codes (Ultra-Quantisation top-k / BitNet absmean), bitplanes or base-3"
    data_free = True

    def __init__(self, *, rht: bool = True, seed: int = 0, mode: ModeLike = "topk",
                 nonzero: float = 0.54, packing: PackingLike = "bitplanes") -> None:
        super().__init__(rht=rht, seed=seed)
        self.mode = check_choice("mode", mode, ("topk", "absmean", "optimal"))
        self.packing = check_choice("packing", packing, ("bitplanes", "base3"))
        nonzero = float(nonzero)
        if not 0.0 < nonzero <= 1.0:
            raise InvalidSpec(f"nonzero must be in (0, 1], got {nonzero}")
        self.nonzero = nonzero

    # ------------------------------------------------------------- layout
    @property
    def nbytes(self) -> int:
        """Bytes per bitplane (``ceil(D/8)``)."""
        return (self._d_work + 7) // 8

    def _payload(self) -> int:
        return 2 * self.nbytes if self.packing == "bitplanes" else (self._d_work + 4) // 5

    def _code_size(self) -> int:
        return self._payload() + 4

    # --------------------------------------------------------- quantising
    def ternarize(self, xw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Work vectors (n, D) → (t int8 (n, D) in {−1, 0, 1}, scale float32 (n,))."""
        n, dim = xw.shape
        ax = np.abs(xw)
        if self.mode == "topk":
            k = min(dim, max(1, round(self.nonzero * dim)))
            keep = np.zeros((n, dim), dtype=bool)
            if k == dim:
                keep[:] = True
            else:
                idx = np.argpartition(ax, dim - k, axis=1)[:, dim - k:]
                np.put_along_axis(keep, idx, True, axis=1)
            t = (np.sign(xw) * keep).astype(np.int8)
        elif self.mode == "optimal":
            rms = np.sqrt(np.einsum("ij,ij->i", xw, xw, dtype=np.float64) / dim)
            t = (np.sign(xw) * (ax > (OPTIMAL_THRESHOLD * rms)[:, None])).astype(np.int8)
        else:  # absmean
            gamma = ax.mean(axis=1, dtype=np.float64)
            # BitNet divides by γ + ε; a tiny floor keeps the rule scale-invariant instead.
            g = np.maximum(gamma, np.finfo(np.float32).tiny)[:, None]
            t = np.clip(np.rint(xw / g), -1, 1).astype(np.int8)
            return t, gamma.astype(np.float32)
        nnz = np.count_nonzero(t, axis=1)
        dot = np.einsum("ij,ij->i", xw, t, dtype=np.float64)
        alpha = np.where(nnz > 0, dot / np.maximum(nnz, 1), 0.0)
        return t, alpha.astype(np.float32)

    def _encode(self, xw: np.ndarray) -> np.ndarray:
        n = xw.shape[0]
        t, scale = self.ternarize(xw)
        codes = np.empty((n, self._code_size()), dtype=np.uint8)
        if self.packing == "bitplanes":
            codes[:, : self.nbytes] = np.packbits(t > 0, axis=1)
            codes[:, self.nbytes: 2 * self.nbytes] = np.packbits(t < 0, axis=1)
        else:
            nb = self._payload()
            digits = np.ones((n, nb * 5), dtype=np.uint8)  # padding trit 1 ↔ value 0
            digits[:, : t.shape[1]] = (t + 1).astype(np.uint8)
            codes[:, :nb] = digits.reshape(n, nb, 5) @ _POW3  # ≤ 242, no uint8 overflow
        codes[:, self._payload():] = scale.astype("<f4")[:, None].view(np.uint8)
        return codes

    def scales(self, codes: np.ndarray) -> np.ndarray:
        """Per-vector float32 scale (α, or γ for "absmean"), validated finite."""
        s = np.ascontiguousarray(codes[:, self._payload():]).view("<f4")[:, 0].astype(np.float32)
        if not np.isfinite(s).all():
            row = int(np.flatnonzero(~np.isfinite(s))[0])
            raise InvalidCodes(f"ternary codes carry a non-finite scale in row {row}")
        return s

    def trits(self, codes: np.ndarray) -> np.ndarray:
        """The ternary vectors t of ``codes`` as int8 (n, D)."""
        self._require_fitted()
        codes = as_code_matrix(codes, code_size=self._code_size())
        return self._trits(codes)

    def _trits(self, codes: np.ndarray) -> np.ndarray:
        dim = self._d_work
        if self.packing == "bitplanes":
            p, m = self._planes(codes)
            return (np.unpackbits(p, axis=1, count=dim).astype(np.int8)
                    - np.unpackbits(m, axis=1, count=dim).astype(np.int8))
        raw = codes[:, : self._payload()]
        if raw.size and int(raw.max()) > 242:
            row = int(np.flatnonzero((raw > 242).any(axis=1))[0])
            raise InvalidCodes(f"base3 ternary byte > 242 in row {row} (5 trits per byte allow 0..242)")
        return _trit_table()[raw].reshape(len(codes), -1)[:, :dim]

    def _planes(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P, N) uint8 (n, nbytes) from validated codes; raises if a coordinate is in both planes."""
        if self.packing == "bitplanes":
            p = codes[:, : self.nbytes]
            m = codes[:, self.nbytes: 2 * self.nbytes]
        else:
            t = self._trits(codes)
            p, m = np.packbits(t > 0, axis=1), np.packbits(t < 0, axis=1)
        mask = tail_mask(self._d_work)
        both = (p & m).any(axis=1) | ((p[:, -1] | m[:, -1]) & ~mask != 0)
        if both.any():
            raise InvalidCodes(
                f"ternary codes row {int(np.flatnonzero(both)[0])}: a bit is set in both the +1 and "
                "−1 planes, or a padding bit is set"
            )
        return p, m

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        scale = self.scales(codes)
        return self._trits(codes).astype(np.float32) * scale[:, None]

    # ---------------------------------------------------------- search side
    def bitplanes(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Plane P (+1 bits) and plane N (−1 bits), uint8 (n, ceil(D/8)) each.

        Views into ``codes`` for "bitplanes" packing; freshly packed from the trits for "base3".
        """
        self._require_fitted()
        codes = as_code_matrix(codes, code_size=self._code_size())
        return self._planes(codes)

    def ternary_dot(self, codes_a: np.ndarray, codes_b: np.ndarray) -> np.ndarray:
        """Symmetric ternary dot products ⟨t_a, t_b⟩ (scales ignored), int32 (na, nb).

        = popcount(Pa∧Pb) + popcount(Na∧Nb) − popcount(Pa∧Nb) − popcount(Na∧Pb).  With a fixed
        number k of non-zeros ("topk"), ‖t_a − t_b‖² = 2k − 2⟨t_a, t_b⟩.
        """
        plus_a, minus_a = self.bitplanes(codes_a)
        plus_b, minus_b = self.bitplanes(codes_b)
        words = [pack_words(p) for p in (plus_a, minus_a, plus_b, minus_b)]
        work = 2 * words[0].size * len(plus_b)
        kernel = ternary_dot_u64 if parallel.kernel_parallel(len(plus_a), work) else ternary_dot_u64_serial
        return kernel(*words)

    def scan_terms(self, codes: np.ndarray) -> ScanTerms:
        """The per-row scale α: ⟨q, decode(code)⟩ = α · (Σ_{P} q − Σ_{N} q), a sum over the planes' set bits."""
        self._require_fitted()
        scale = self.scales(as_code_matrix(codes, code_size=self._code_size()))
        return ScanTerms(scale=np.ascontiguousarray(scale, dtype=np.float32))

    def estimate_ip(self, xq: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """⟨xq_i, decode(codes)_j⟩ = scale_j·(Σ_{P_j} q − Σ_{N_j} q), float32 (nq, n).

        Exact for the reconstruction (up to float32 summation order): one 256-entry table of
        query partial sums per plane byte, the N-plane tables negated, scanned by
        :func:`~vqsearch.kernels.pq.adc_scan8` over the concatenated planes.
        """
        queries = self.work_queries(xq)
        codes = as_code_matrix(codes, code_size=self._code_size())
        scale = self.scales(codes)
        plus, minus = self._planes(codes)
        planes = codes if self.packing == "bitplanes" else np.concatenate([plus, minus], axis=1)
        lut = query_luts(queries, self.nbytes)
        nq = len(queries)
        s = adc_scan(np.concatenate([lut, -lut], axis=1), planes, 8,
                     parallel.kernel_parallel(nq, nq * planes.shape[0] * 2 * self.nbytes))
        return s * scale[None, :]
