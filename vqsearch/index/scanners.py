"""Scanners: the first search stage for each scan-quantiser family.

A scanner estimates ⟨q, x⟩ for every stored code of a segment and keeps the best
``kk`` rows per query without materialising an (nq, n) score matrix.  Estimates
have the affine form

    ⟨q, x⟩ ≈ c_q + a_i + b_i · S_q(code_i)

with per-query constants c_q, per-row terms (a_i, b_i) read once per segment from
the codes (RaBitQ factors, norms) and a kernel-computed sum S over code bytes.
For the ``l2`` metric the index ranks by 2⟨q, x⟩ − ‖x‖², i.e. it rescales (a, b, c).

* :class:`LutScanner` — one 256-entry table per code byte and query
  (:func:`~vqsearch.kernels.scan.lut_scan_topk`); 8-bit PQ and ternary codes.
* :class:`BinaryScanner` — sign bits, RaBitQ's unbiased asymmetric estimate: on AVX-512 hosts
  the 4-bit fast-scan kernel over the sign nibbles keeps the rows whose confidence interval
  reaches the top k (:data:`~vqsearch.kernels.fastscan.fastscan_candidates`), re-estimated
  exactly; elsewhere a popcount (Hamming) pass keeps ``4·kk`` rows and the estimate picks ``kk``
  (:func:`~vqsearch.kernels.scan.binary_cascade_topk`).
* :class:`FastScanPQScanner` — 4-bit PQ codes: uint8 tables in SIMD registers, 64 lookups per
  instruction (:mod:`~vqsearch.kernels.fastscan`).
* :class:`DecodeScanner` — any other quantiser: decode blocks, multiply (slow, exact
  for the reconstruction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numba
import numpy as np

from ..kernels.fastscan import (
    HAS_AVX512,
    PackedCodes,
    RowTerms,
    fastscan_candidates,
    fastscan_topk,
    ip_luts_u8,
    pack_fastscan,
    quantize_luts,
    term_bounds,
)
from ..kernels.scan import (
    binary_cascade_topk,
    binary_cascade_topk_serial,
    binary_refine,
    binary_refine_serial,
    lut_scan_topk,
    lut_scan_topk_serial,
    lut_scan_topk_split,
    sign_nibble_luts,
    transpose_sign_words,
)
from ..kernels.topk import merge_topk, topk_rows
from ..quantizers.base import Quantizer

EMPTY_F32 = np.zeros(0, dtype=np.float32)

#: All 256 byte values as bits, most significant first (numpy ``packbits`` order): (256, 8) of {0, 1}.
BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32)

#: Hamming pass of the binary cascade keeps this many candidates per final scan candidate.
CASCADE_FACTOR = 4
#: Below this many (query, row) pairs a scan runs on one thread: waking the pool costs more.
PARALLEL_MIN_WORK = 200_000


def scanned_rows(ranges: np.ndarray) -> int:
    """Total rows covered by a (nq, R, 2) array of half-open ranges."""
    return int((ranges[..., 1] - ranges[..., 0]).sum())


def bit_tables(qw: np.ndarray, nbytes: int) -> np.ndarray:
    """T[q, j, b] = Σ_t bit_t(b) · qw[q, 8j + t] for packbits-ordered bytes → (nq, nbytes, 256)."""
    nq, d = qw.shape
    padded = np.zeros((nq, nbytes * 8), dtype=np.float32)
    padded[:, :d] = qw[:, : nbytes * 8]
    return np.ascontiguousarray(np.einsum("qjt,bt->qjb", padded.reshape(nq, nbytes, 8), BYTE_BITS))


@dataclass
class Prepared:
    """Per-batch query state of a scanner (work-domain queries and whatever the kernel needs)."""

    qw: np.ndarray
    qconst: np.ndarray
    extra: dict = field(default_factory=dict)


class Scanner:
    """Common interface; see the module docstring."""

    def __init__(self, q: Quantizer) -> None:
        self.q = q

    def prepare(self, xq: np.ndarray) -> Prepared:
        raise NotImplementedError

    def row_terms(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-row (a, b) float32 arrays (empty = 0 / 1) for a segment's codes."""
        return EMPTY_F32, EMPTY_F32

    def segment_data(self, codes: np.ndarray, row_a: np.ndarray = EMPTY_F32, row_b: np.ndarray = EMPTY_F32) -> object:
        """Anything derived once from a segment's codes and the row terms the scan will get (e.g. a
        kernel-friendly layout); cached by the index."""
        return None

    def scan(self, prep: Prepared, codes: np.ndarray, row_a: np.ndarray, row_b: np.ndarray,
             ranges: np.ndarray, live: np.ndarray, kk: int, scale: float, seg_data: object = None,
             k: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Best ``kk`` rows per query over ``ranges`` of one segment → (scores, rows, ip, width), (nq, kk) each,
        in any order (−1 rows score −inf).  ``k`` (≤ kk) is the number of final results: a scanner whose
        estimates carry a confidence bound may return only the rows that can reach the top ``k``.

        ``scale`` multiplies the per-query constants (2 for the l2 ranking 2⟨q,x⟩ − ‖x‖²).  ``ip`` is the
        exact ⟨q, decode(code)⟩ of each kept row when the scanner gets it for free, else ``None``.
        ``width`` is the half-width of a confidence interval of each score around the exact one when the
        estimator has an error bound (RaBitQ), else ``None``; rescoring skips rows that cannot reach the top k.
        """
        raise NotImplementedError


class LutScanner(Scanner):
    """Byte lookup tables; subclasses provide :meth:`tables`."""

    def tables(self, qw: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, xq: np.ndarray) -> Prepared:
        qw = self.q.work_queries(xq)
        return Prepared(qw, np.zeros(qw.shape[0], np.float32), {"tables": self.tables(qw)})

    def scan(self, prep, codes, row_a, row_b, ranges, live, kk, scale, seg_data=None, k=None):
        tables = prep.extra["tables"]
        bias = np.ascontiguousarray(np.broadcast_to((scale * prep.qconst)[:, None], ranges.shape[:2]),
                                    dtype=np.float32)
        work = scanned_rows(ranges)
        if work < PARALLEL_MIN_WORK:
            return (*lut_scan_topk_serial(tables, codes, row_a, row_b, ranges, bias, live, kk), None, None)
        if tables.shape[0] == 1:  # one query: split its rows over the threads
            v, r = lut_scan_topk_split(tables[0], codes, row_a, row_b, ranges[0], bias[0], live, kk,
                                       max(1, numba.get_num_threads()))
            return v[None], r[None], None, None
        return (*lut_scan_topk(tables, codes, row_a, row_b, ranges, bias, live, kk), None, None)


class DecodeScanner(Scanner):
    """Fallback: ⟨q, decode(code)⟩ through the quantiser's ``estimate_ip``, in blocks.

    It scans every row of the segment whatever the IVF ranges say (a superset of the probed lists, so
    results are never worse), because per-query row sets do not batch into one matrix product.
    """

    block = 16_384

    def prepare(self, xq: np.ndarray) -> Prepared:
        return Prepared(np.ascontiguousarray(xq, dtype=np.float32), np.zeros(xq.shape[0], np.float32))

    def scan(self, prep, codes, row_a, row_b, ranges, live, kk, scale, seg_data=None, k=None):
        nq = prep.qw.shape[0]
        best_v = np.full((nq, 0), -np.inf, dtype=np.float32)
        best_r = np.full((nq, 0), -1, dtype=np.int64)
        n = codes.shape[0]
        for s in range(0, n, self.block):
            sc = self.q.estimate_ip(prep.qw, codes[s:s + self.block]).astype(np.float32)
            if row_b.size:
                sc *= row_b[s:s + self.block]
            if row_a.size:
                sc += row_a[s:s + self.block]
            if live.size:
                sc[:, ~live[s:s + self.block]] = -np.inf
            v, c = topk_rows(np.ascontiguousarray(sc), min(kk, sc.shape[1]))
            c = np.where(np.isfinite(v), c + s, -1)
            best_v, best_r = merge_topk(best_v, best_r, v, c, kk)
        return best_v, best_r, None, None


@dataclass
class BinarySegment:
    """A segment's sign codes laid out for the scan, and the per-row reconstruction levels."""

    level: np.ndarray  # float32 (n,): decode = c + level·(2b − 1)
    error: np.ndarray  # float32 (n,): RaBitQ error scale r·√(1 − ρ²)/(ρ√D) per unit query norm
    blocks: PackedCodes | None = None  # fast-scan blocks of the sign bits (kernels.fastscan.pack_fastscan)
    bounds: np.ndarray | None = None  # per-block row-term bounds (kernels.fastscan.term_bounds)
    words_t: np.ndarray | None = None  # popcount cascade: uint64 (W, n), see kernels.scan.transpose_sign_words


#: Half-width of the RaBitQ confidence interval in units of the per-row error scale ‖q‖·r·√(1 − ρ²)/(ρ√D)
#: (Gao & Long 2024, Thm 3.2, use ε₀ = 1.9 for a near-certain bound).  Rows whose upper bound is below the
#: k-th best lower bound are not rescored.  On Debian-MiniLM (default preset) 1.25 kept recall@10 within
#: 0.001 of no pruning while rescoring about a third fewer candidates; 1.0 lost 0.003–0.004.
RABITQ_CONFIDENCE = 1.25

#: Binary codes are scanned as 4-bit fast-scan codes where the CPU has the AVX-512 kernels (measured
#: faster than the popcount cascade there, see ``benchmarks/RESULTS.md``), else by the popcount cascade.
BINARY_FASTSCAN = HAS_AVX512


class BinaryScanner(Scanner):
    """RaBitQ for ``binary`` codes: ⟨q,x⟩ ≈ ⟨q,c⟩ + (r/(ρ√D)) · Σ_i q_i (2b_i − 1).

    Two kernels compute the estimate:

    * **fast-scan** (``fastscan=True``): every 4 sign bits are a 4-bit code whose 16-entry table holds the
      query's signed sums of those 4 coordinates, so the sum above is a 4-bit PQ score that the SIMD
      fast-scan kernel computes from uint8 tables (:mod:`vqsearch.kernels.fastscan`), within M·Δ/2.  The
      ``kk`` rows it keeps are re-estimated exactly in float and re-ranked.
    * **popcount cascade**: a Hamming pass over the sign bits (vectorised popcount over transposed uint64
      words) keeps ``4·kk`` rows; the exact asymmetric estimate then picks ``kk``.

    Either way the scan also returns the exact ⟨q, decode(code)⟩ of the kept rows, which residual
    rescoring adds instead of decoding the codes again.
    """

    def __init__(self, q: Quantizer, fastscan: bool | None = None) -> None:
        super().__init__(q)
        self.fastscan = BINARY_FASTSCAN if fastscan is None else bool(fastscan)

    def prepare(self, xq: np.ndarray) -> Prepared:
        q = self.q
        qw = q.work_queries(xq)
        qconst = (qw @ q.centroid).astype(np.float32)
        lut = sign_nibble_luts(qw, q.nbytes)
        if self.fastscan:
            return Prepared(qw, qconst, {"lut": lut, "tables": quantize_luts(lut, parallel=qw.shape[0] > 1)})
        nwords = (q.nbytes + 7) // 8
        qbytes = np.zeros((qw.shape[0], nwords * 8), dtype=np.uint8)
        qbytes[:, : q.nbytes] = np.packbits(qw > 0, axis=1)
        return Prepared(qw, qconst, {"lut": lut, "qwords": qbytes.view("<u8")})

    def row_terms(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r, rho = self.q.factors(np.asarray(codes))
        with np.errstate(invalid="ignore", divide="ignore"):
            coef = np.where(rho > 0, r / rho, 0.0) / np.sqrt(self.q._d_work)
        return EMPTY_F32, coef.astype(np.float32)

    def segment_data(self, codes, row_a=EMPTY_F32, row_b=EMPTY_F32) -> BinarySegment:
        codes = np.asarray(codes)
        r, rho = self.q.factors(codes)
        dim = self.q._d_work
        with np.errstate(invalid="ignore", divide="ignore"):  # ρ = 0 only for r = 0: the estimate is exact
            error = np.where(rho > 0, r * np.sqrt(np.maximum(1 - rho * rho, 0)) / (rho * np.sqrt(dim)), 0)
        seg = BinarySegment(level=(r * rho / np.float32(np.sqrt(dim))).astype(np.float32),
                            error=error.astype(np.float32))
        if self.fastscan:
            seg.blocks = pack_fastscan(codes[:, : self.q.nbytes])
            seg.bounds = term_bounds(RowTerms.optional(row_a, row_b, seg.error), codes.shape[0])
        else:
            seg.words_t = transpose_sign_words(codes, self.q.nbytes)
        return seg

    def scan(self, prep, codes, row_a, row_b, ranges, live, kk, scale, seg_data=None, k=None):
        seg = self.segment_data(codes, row_a, row_b) if seg_data is None else seg_data
        parallel = scanned_rows(ranges) >= PARALLEL_MIN_WORK
        qconst = (scale * prep.qconst).astype(np.float32)
        qwidth = ((RABITQ_CONFIDENCE * scale) * np.sqrt(np.einsum("ij,ij->i", prep.qw, prep.qw))).astype(np.float32)
        x = prep.extra
        if seg.blocks is None:
            kernel = binary_cascade_topk if parallel else binary_cascade_topk_serial
            v, r, ip = kernel(prep.qw, x["qwords"], seg.words_t, self.q.nbytes, row_a, row_b, qconst, ranges, live,
                              max(CASCADE_FACTOR * kk, 64), kk, prep.qconst, seg.level)
        else:
            bias = np.ascontiguousarray(np.broadcast_to(qconst[:, None], ranges.shape[:2]))
            live_rows = live if live.size else None
            if k is not None and k < kk:  # only rows whose interval reaches the top k (a top-k heap + appends)
                terms = RowTerms.optional(row_a, row_b, seg.error, seg.bounds)
                _, rows = fastscan_candidates(x["tables"], seg.blocks, ranges, k, kk, qwidth, terms, bias=bias,
                                              live=live_rows, parallel=parallel)
            else:
                terms = RowTerms.optional(row_a, row_b, bounds=seg.bounds)
                _, rows = fastscan_topk(x["tables"], seg.blocks, ranges, kk, bias=bias, live=live_rows, terms=terms,
                                        parallel=parallel)
            refine = binary_refine if parallel else binary_refine_serial
            v, r, ip = refine(x["lut"], np.asarray(codes), rows, qconst, row_a, row_b, prep.qconst, seg.level)
        width = (qwidth[:, None] * seg.error[np.maximum(r, 0)]).astype(np.float32)
        return v, r, ip, width


class PQScanner(LutScanner):
    """Asymmetric distance computation for ``pq``/``opq``: ⟨q, x⟩ = Σ_p ⟨q_p, C_p[code_p]⟩.

    8-bit codes use the per-sub-quantiser tables directly; 4-bit codes (two per byte) use one 256-entry
    table per byte that adds the two sub-quantisers' entries, so every code byte costs one lookup.
    """

    def prepare(self, xq: np.ndarray) -> Prepared:
        q = self.q
        lut = q.lut(xq, "ip")  # (nq, M, K); PQ applies its own rotation to input-domain queries
        if q.nbits == 4:
            nq, m, _ = lut.shape
            if m % 2:
                lut = np.concatenate([lut, np.zeros((nq, 1, 16), np.float32)], axis=1)
            low, high = lut[:, 0::2, :], lut[:, 1::2, :]  # byte = low nibble | high nibble << 4
            lut = (low[:, :, None, :] + high[:, :, :, None]).reshape(nq, lut.shape[1] // 2, 256)
        return Prepared(xq, np.zeros(xq.shape[0], np.float32),
                        {"tables": np.ascontiguousarray(lut, dtype=np.float32)})


class FastScanPQScanner(Scanner):
    """4-bit ``pq``/``opq`` codes through the SIMD fast-scan kernel (:mod:`vqsearch.kernels.fastscan`).

    Tables are quantised to uint8 per query and looked up 64 at a time with byte permutes; the scan
    score is within M·Δ/2 of the float ADC score, which rescoring then refines.  Each segment's codes are
    re-laid once into 32-row blocks (:func:`~vqsearch.kernels.fastscan.pack_fastscan`), cached by the index.
    """

    def prepare(self, xq: np.ndarray) -> Prepared:
        q = self.q
        qw = q._rotate(q.work_queries(xq))
        return Prepared(xq, np.zeros(xq.shape[0], np.float32),
                        {"tables": ip_luts_u8(qw, q.centroids, parallel=qw.shape[0] > 1)})

    def segment_data(self, codes, row_a=EMPTY_F32, row_b=EMPTY_F32) -> tuple[PackedCodes, np.ndarray]:
        codes = np.asarray(codes)
        bounds = term_bounds(RowTerms.optional(row_a, row_b), codes.shape[0])
        return pack_fastscan(codes[:, : self.q.code_size]), bounds

    def scan(self, prep, codes, row_a, row_b, ranges, live, kk, scale, seg_data=None, k=None):
        packed, bounds = self.segment_data(codes, row_a, row_b) if seg_data is None else seg_data
        v, r = fastscan_topk(prep.extra["tables"], packed, ranges, kk, live=live if live.size else None,
                             terms=RowTerms.optional(row_a, row_b, bounds=bounds),
                             parallel=scanned_rows(ranges) >= PARALLEL_MIN_WORK)
        return v, r, None, None


def _pq_scanner(q: Quantizer) -> Scanner:
    return FastScanPQScanner(q) if q.nbits == 4 else PQScanner(q)


class TernaryScanner(LutScanner):
    """``ternary`` bitplane codes: ⟨q, α·t⟩ = α · (Σ_{t_i=+1} q_i − Σ_{t_i=−1} q_i), one table per plane byte."""

    def tables(self, qw: np.ndarray) -> np.ndarray:
        nb = self.q.nbytes
        plus = bit_tables(qw, nb)
        return np.ascontiguousarray(np.concatenate([plus, -plus], axis=1), dtype=np.float32)

    def row_terms(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return EMPTY_F32, np.ascontiguousarray(self.q.scales(np.asarray(codes)), dtype=np.float32)


def _ternary_scanner(q: Quantizer) -> Scanner:
    return TernaryScanner(q) if q.packing == "bitplanes" else DecodeScanner(q)


_SCANNERS: dict[str, Callable[[Quantizer], Scanner]] = {
    "binary": BinaryScanner, "pq": _pq_scanner, "opq": _pq_scanner, "ternary": _ternary_scanner,
}


def register_scanner(name: str, factory: Callable[[Quantizer], Scanner]) -> None:
    """Use ``factory`` to scan codes of quantiser family ``name``."""
    _SCANNERS[name] = factory


def scanner_for(q: Quantizer) -> Scanner:
    """The fastest available scanner for quantiser ``q``."""
    factory = _SCANNERS.get(q.name)
    return factory(q) if factory is not None else DecodeScanner(q)
