"""Sign-bit codes with RaBitQ factors: ``binary`` (1 bit/dim + 8 bytes per vector).

Encoding a vector (work domain, after the default RHT; D = work dimension):

1. residual ``o = x − c`` with ``c`` the training mean (``centre=True``) or 0;
2. sign bits ``b_i = [o_i > 0]`` packed with ``np.packbits`` (big bit order: byte 0 bit 7 is
   work coordinate 0; padding bits 0), ``ceil(D/8)`` bytes;
3. two little-endian float32 factors: ``r = ‖o‖`` and ``ρ = ⟨ō, o/‖o‖⟩ = Σ|o_i| / (√D·‖o‖)``
   where ``ō = (2b − 1)/√D`` is the unit sign vector (ρ → sqrt(2/π) ≈ 0.798 for Gaussian-like
   coordinates; ρ = 0 for a zero residual).

``code_size = ceil(D/8) + 8``.  Decoding returns the MSE-best point on the sign pattern,
``c + r·ρ·ō = c + mean|o|·(2b − 1)``, so on i.i.d. N(0,1) data the MSE is 1 − 2/π ≈ 0.363.

Search (Gao & Long, RaBitQ, SIGMOD 2024): for a query q in the work domain,

.. math:: \\widehat{\\langle q, x\\rangle} = \\langle q, c\\rangle
          + \\frac{r}{\\rho}\\,\\frac{2\\sum_{i: b_i = 1} q_i - \\sum_i q_i}{\\sqrt D}

is an unbiased estimate of ⟨q, x⟩ over the random rotation (so ``rht=True`` is what makes it
unbiased), with error std ≈ ‖q‖·r·sqrt(1 − ρ²)/(ρ·sqrt(D − 1)).  The sum over set bits is
looked up in per-query byte tables (:func:`~vqsearch.kernels.popcount.byte_luts`) and
accumulated by the ADC scan kernel.  Symmetric scoring (:meth:`Binary.hamming`) is the
Hamming distance between sign bits (popcount of XOR over uint64 words).

Round trip: re-encoding a decoded point gives the same sign bits and factors (up to float32
rounding), so decode∘encode is idempotent on decoded points whenever the work transform is
invertible on them (no RHT, or an RHT that needs no padding, e.g. d = 384, 768, 1024).
"""

from __future__ import annotations

import numpy as np

from .. import parallel
from .._validation import as_code_matrix, as_float_matrix
from ..errors import InvalidCodes
from ..kernels.popcount import byte_luts, byte_luts_serial, hamming_u64, hamming_u64_serial
from ..kernels.pq import adc_scan
from .base import Quantizer, ScanTerms
from .registry import register


def pack_words(packed: np.ndarray) -> np.ndarray:
    """(n, nbytes) packed bits → (n, ceil(nbytes/8)) uint64 words (zero-padded), for popcount kernels."""
    n, nbytes = packed.shape
    nw = (nbytes + 7) // 8
    buf = np.zeros((n, nw * 8), dtype=np.uint8)
    buf[:, :nbytes] = packed
    return buf.view(np.uint64)


def query_luts(work_queries: np.ndarray, nbytes: int) -> np.ndarray:
    """Per-byte partial-sum tables of work-domain queries, float32 (nq, nbytes, 256)."""
    nq = len(work_queries)
    kernel = byte_luts if parallel.kernel_parallel(nq, nq * nbytes * 256) else byte_luts_serial
    return kernel(work_queries, nbytes)


def tail_mask(dim: int) -> np.uint8:
    """Byte mask of the valid bits in the last packed byte of a ``dim``-bit row (big bit order)."""
    r = dim % 8
    return np.uint8(0xFF if r == 0 else (0xFF << (8 - r)) & 0xFF)


@register(aliases=("sign", "rabitq"))
class Binary(Quantizer):
    """1-bit sign codes with RaBitQ factors for unbiased asymmetric inner products.

    Parameters
    ----------
    rht : bool, default True
        Randomized Hadamard transform first.  On by default: it is the random rotation that makes
        the RaBitQ estimator unbiased and spreads outlier dimensions, and it makes sign bits of
        different coordinates nearly independent (SimHash: E[Hamming]/D = θ/π).
    seed : int, default 0
        Seed of the RHT signs.
    centre : bool, default True
        Subtract the training mean before taking signs.  Embedding sets share a large common
        component (MiniLM vectors have mean cosine ≈ 0.1–0.2 to each other); without centring most
        vectors get similar sign patterns.  With ``centre=False`` the quantiser is data-free.
    """

    name = "binary"
    codec_id = 3
    description = "sign bits (1 bit/dim) + 2 float32 RaBitQ factors, popcount/LUT scoring"
    data_free = False
    min_train = 1

    def __init__(self, *, rht: bool = True, seed: int = 0, centre: bool = True) -> None:
        super().__init__(rht=rht, seed=seed)
        self.centre = bool(centre)
        self._c: np.ndarray | None = None

    # ------------------------------------------------------------- layout
    @property
    def nbytes(self) -> int:
        """Bytes of sign bits per vector (the factors follow them)."""
        return (self._d_work + 7) // 8

    def _code_size(self) -> int:
        return self.nbytes + 8

    # ----------------------------------------------------------- protocol
    def _fit(self, xw: np.ndarray | None) -> None:
        if self.centre and xw is not None:
            self._c = xw.mean(axis=0, dtype=np.float64).astype(np.float32)
        else:
            self._c = np.zeros(self._d_work, dtype=np.float32)

    def _encode(self, xw: np.ndarray) -> np.ndarray:
        n, dim = xw.shape
        o = xw - self._c
        bits = np.packbits(o > 0, axis=1)
        o64 = o.astype(np.float64)
        r = np.sqrt(np.einsum("ij,ij->i", o64, o64))
        l1 = np.abs(o64).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = np.where(r > 0, l1 / (np.sqrt(dim) * r), 0.0)
        codes = np.empty((n, self._code_size()), dtype=np.uint8)
        codes[:, : self.nbytes] = bits
        codes[:, self.nbytes:] = np.stack([r, rho], axis=1).astype("<f4").view(np.uint8)
        return codes

    def factors(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-vector ``(r, ρ)`` = (‖o − c‖, ⟨ō, o⟩/‖o‖) as float32 arrays, validated finite and ≥ 0."""
        f = np.ascontiguousarray(codes[:, self.nbytes:]).view("<f4").astype(np.float32)
        if not np.isfinite(f).all() or (f < 0).any():
            bad = int(np.flatnonzero(~(np.isfinite(f) & (f >= 0)).all(axis=1))[0])
            raise InvalidCodes(f"binary codes carry invalid factors (NaN, inf or negative) in row {bad}")
        return f[:, 0], f[:, 1]

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        dim = self._d_work
        signs = np.unpackbits(codes[:, : self.nbytes], axis=1, count=dim).astype(np.float32) * 2 - 1
        return signs * self._sign_levels(codes)[:, None] + self._c

    def _sign_levels(self, codes: np.ndarray) -> np.ndarray:
        r, rho = self.factors(codes)
        return (r * rho / np.float32(np.sqrt(self._d_work))).astype(np.float32)  # = mean |o_i|

    def _state(self) -> dict[str, np.ndarray]:
        return {"centre": self._c}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        c = arrays["centre"]
        if c.shape != (self._d_work,):
            raise ValueError(f"centre must have shape ({self._d_work},), got {c.shape}")
        self._c = c.astype(np.float32)

    # ---------------------------------------------------------- search side
    @property
    def centroid(self) -> np.ndarray:
        """The centre c subtracted before taking signs (RaBitQ's centroid), work domain, float32 (D,)."""
        self._require_fitted()
        return self._c

    def sign_levels(self, codes: np.ndarray) -> np.ndarray:
        """Per-row magnitude of the decoded point, float32 (n,): ``decode = c + level·(2b − 1)``
        (work domain), ``level = r·ρ/√D = mean |o_i|``."""
        self._require_fitted()
        return self._sign_levels(as_code_matrix(codes, code_size=self._code_size()))

    def scan_terms(self, codes: np.ndarray) -> ScanTerms:
        """RaBitQ's per-row terms: scale ``r/(ρ√D)`` on the signed sum Σ_i q_i(2b_i − 1) (the per-query
        constant is ⟨q, c⟩), and the error scale ``r·√(1 − ρ²)/(ρ√D)`` (Gao & Long 2024, Thm 3.2)."""
        self._require_fitted()
        r, rho = self.factors(as_code_matrix(codes, code_size=self._code_size()))
        dim = self._d_work
        with np.errstate(invalid="ignore", divide="ignore"):  # ρ = 0 only for r = 0: the estimate is exact
            scale = np.where(rho > 0, r / rho, 0.0) / np.sqrt(dim)
            error = np.where(rho > 0, r * np.sqrt(np.maximum(1 - rho * rho, 0)) / (rho * np.sqrt(dim)), 0)
        return ScanTerms(scale=scale.astype(np.float32), error=error.astype(np.float32))

    def sign_bytes(self, codes: np.ndarray) -> np.ndarray:
        """The packed sign bits of ``codes``: a uint8 (n, nbytes) view (no copy)."""
        self._require_fitted()
        codes = as_code_matrix(codes, code_size=self._code_size())
        return codes[:, : self.nbytes]

    def hamming_codes(self, x: np.ndarray) -> np.ndarray:
        """Packed sign bits of ``x`` (uint8 (n, nbytes)), the operand of Hamming scoring."""
        self._require_fitted()
        xw = self.to_work(as_float_matrix(x, d=self.d))
        return np.packbits(xw - self._c > 0, axis=1)

    def _words(self, codes: np.ndarray) -> np.ndarray:
        sb = np.array(self.sign_bytes(codes))
        sb[:, -1] &= tail_mask(self._d_work)  # foreign codes may carry junk padding bits
        return pack_words(sb)

    def hamming(self, codes_a: np.ndarray, codes_b: np.ndarray) -> np.ndarray:
        """Symmetric Hamming distances between the sign bits of two code sets, int32 (na, nb).

        The float factors are ignored.  Under the RHT, E[H]/D = θ/π for vectors at angle θ
        (relative to the centre), so ``cos(π·H/D)`` estimates their cosine.
        """
        wa, wb = self._words(codes_a), self._words(codes_b)
        kernel = hamming_u64 if parallel.kernel_parallel(len(wa), wa.size * len(wb)) else hamming_u64_serial
        return kernel(wa, wb)

    def estimate_ip(self, xq: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Unbiased RaBitQ estimates of ⟨xq_i, x_j⟩ (the original vectors), float32 (nq, n).

        Differs from the base-class ⟨xq, decode(codes)⟩, which is shrunk by ρ² on average:
        this is the estimator to rank with.  Cost: one (nbytes, 256) table per query, then
        ``nbytes`` look-ups per code (:func:`~vqsearch.kernels.pq.adc_scan8`, over the sign bytes).
        """
        queries = self.work_queries(xq)
        codes = as_code_matrix(codes, code_size=self._code_size())
        dim = self._d_work
        r, rho = self.factors(codes)
        with np.errstate(invalid="ignore", divide="ignore"):
            coef = np.where(rho > 0, r / rho, 0.0).astype(np.float32) / np.float32(np.sqrt(dim))
        nq = len(queries)
        set_sum = adc_scan(query_luts(queries, self.nbytes), codes, 8,  # Σ_{b_i=1} q_i, (nq, n)
                           parallel.kernel_parallel(nq, nq * codes.shape[0] * self.nbytes))
        query_sum = queries.sum(axis=1, dtype=np.float64).astype(np.float32)
        query_const = queries @ self._c
        return (query_const[:, None] + (np.float32(2.0) * set_sum - query_sum[:, None]) * coef[None, :]
                ).astype(np.float32)
