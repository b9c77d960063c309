"""Scanners: the first search stage for each scan-quantiser family.

A scanner estimates ⟨q, x⟩ for every stored code of a segment and keeps the best
``n_keep`` rows per query without materialising an (nq, n) score matrix.  Estimates
have the affine form

    ⟨q, x⟩ ≈ c_q + offset_i + scale_i · S_q(code_i)

with a per-query constant c_q (:attr:`PreparedQueries.query_offset`), per-row terms read
once per segment from the codes (:meth:`vqsearch.quantizers.Quantizer.scan_terms`: RaBitQ
factors, norms) and a kernel-computed sum S over code bytes.  The index turns the per-row
terms into its ranking score's (:mod:`.metric`: for ``l2`` it ranks by 2⟨q, x⟩ − ‖x‖²)
and passes the factor on c_q as ``score_scale``.

* :class:`LutScanner` — one 256-entry table per code byte and query
  (:func:`~vqsearch.kernels.scan.lut_scan_topk`); 8-bit PQ and ternary codes.
* :class:`BinaryScanner` — sign bits, RaBitQ's unbiased asymmetric estimate: on AVX-512 hosts
  the 4-bit fast-scan kernel over the sign nibbles keeps the rows whose confidence interval
  reaches the top k (:data:`~vqsearch.kernels.fastscan.fastscan_candidates`), re-estimated
  exactly; elsewhere a popcount (Hamming) pass keeps ``4·n_keep`` rows and the estimate picks
  ``n_keep`` (:func:`~vqsearch.kernels.scan.binary_cascade_topk`).
* :class:`FastScanPQScanner` — 4-bit PQ codes: uint8 tables in SIMD registers, 64 lookups per
  instruction (:mod:`~vqsearch.kernels.fastscan`).
* :class:`DecodeScanner` — any other quantiser: decode blocks, multiply (slow, exact
  for the reconstruction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import parallel
from ..kernels.fastscan import (
    HAS_AVX512,
    PackedCodes,
    QueryTables,
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
from ..quantizers import Quantizer, ScanTerms

EMPTY_F32 = np.zeros(0, dtype=np.float32)

#: All 256 byte values as bits, most significant first (numpy ``packbits`` order): (256, 8) of {0, 1}.
BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32)

#: Hamming pass of the binary cascade keeps this many candidates per final scan candidate.
CASCADE_FACTOR = 4


class ScanResult(NamedTuple):
    """The rows a scanner keeps for each query: ``(nq, n_keep)`` arrays, in any order per query.

    ``rows`` are row numbers within the segment (``-1`` = none, scored ``-inf``); ``scores`` the
    estimates on the index's ranking scale.  ``scan_ip`` is the exact ⟨q, decode(code)⟩ of each kept
    row when the scanner gets it for free (residual rescoring adds it instead of decoding again), else
    ``None``.  ``width`` is the half-width of a confidence interval of each score around the exact one
    when the estimator has an error bound (RaBitQ), else ``None``: rescoring skips rows that cannot
    reach the top k.
    """

    scores: np.ndarray
    rows: np.ndarray
    scan_ip: np.ndarray | None = None
    width: np.ndarray | None = None


@dataclass
class ScanSegment:
    """A segment's scan codes and what is derived from them once (cached by the index per segment)."""

    codes: np.ndarray  # uint8 (n, code_size)
    row_offset: np.ndarray  # float32 (n,) or empty (= 0): per-row offset of the ranking score
    row_scale: np.ndarray  # float32 (n,) or empty (= 1): per-row factor on the kernel's sum
    layout: object = None  # scanner-specific re-layout (see Scanner.segment_layout)


@dataclass
class PreparedQueries:
    """Per-batch query state of a scanner."""

    work_queries: np.ndarray  # float32 (nq, D): the queries in the domain the scanner scores in
    query_offset: np.ndarray  # float32 (nq,): the per-query constant c_q of the estimate


@dataclass
class LutQueries(PreparedQueries):
    tables: np.ndarray  # float32 (nq, code bytes, 256): the score of every byte value at every position


@dataclass
class FastScanQueries(PreparedQueries):
    tables: QueryTables  # uint8 fast-scan tables and their affine map (kernels.fastscan.quantize_luts)


@dataclass
class BinaryQueries(PreparedQueries):
    nibble_luts: np.ndarray  # float32 signed sums per sign nibble (kernels.scan.sign_nibble_luts)
    fastscan: FastScanQueries | None = None  # uint8 tables for the fast-scan kernel
    query_words: np.ndarray | None = None  # uint64 (nq, words): the queries' sign bits, popcount cascade


def scanned_rows(ranges: np.ndarray) -> int:
    """Total rows covered by a (nq, R, 2) array of half-open ranges."""
    return int((ranges[..., 1] - ranges[..., 0]).sum())


def bit_tables(work_queries: np.ndarray, nbytes: int) -> np.ndarray:
    """T[q, j, b] = Σ_t bit_t(b) · work_queries[q, 8j + t] for packbits-ordered bytes → (nq, nbytes, 256)."""
    nq, d = work_queries.shape
    padded = np.zeros((nq, nbytes * 8), dtype=np.float32)
    padded[:, :d] = work_queries[:, : nbytes * 8]
    return np.ascontiguousarray(np.einsum("qjt,bt->qjb", padded.reshape(nq, nbytes, 8), BYTE_BITS))


def _bias(query_offset: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """The per-query constant broadcast to one value per (query, range), as the kernels take it."""
    return np.ascontiguousarray(np.broadcast_to(query_offset[:, None], ranges.shape[:2]), dtype=np.float32)


class Scanner:
    """Common interface; see the module docstring."""

    #: Name of the kernel that scans (reported by ``Index.stats()``).
    kernel = "decode"

    def __init__(self, q: Quantizer) -> None:
        self.q = q

    def prepare(self, xq: np.ndarray) -> PreparedQueries:
        raise NotImplementedError

    def row_terms(self, codes: np.ndarray) -> ScanTerms:
        """Per-row terms of this scanner's estimate for a segment's codes (none by default)."""
        return ScanTerms()

    def segment_layout(self, codes: np.ndarray, row_offset: np.ndarray, row_scale: np.ndarray,
                       terms: ScanTerms) -> object:
        """Anything derived once from a segment's codes, the row terms on the ranking scale and the raw
        :meth:`row_terms` (e.g. a kernel-friendly layout); cached by the index."""
        return None

    def scan(self, queries: PreparedQueries, segment: ScanSegment, ranges: np.ndarray, live: np.ndarray,
             n_keep: int, score_scale: float, k: int | None = None) -> ScanResult:
        """Best ``n_keep`` rows per query over ``ranges`` ((nq, R, 2) half-open row ranges) of one segment.

        ``live`` is a bool row mask (empty = all rows live); ``score_scale`` multiplies the per-query
        constants (2 for the l2 ranking 2⟨q,x⟩ − ‖x‖²).  ``k`` (≤ n_keep) is the number of final results:
        a scanner whose estimates carry a confidence bound may return only the rows that can reach the
        top ``k``.
        """
        raise NotImplementedError


class LutScanner(Scanner):
    """Byte lookup tables; subclasses provide :meth:`tables`."""

    kernel = "lut"

    def tables(self, work_queries: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, xq: np.ndarray) -> LutQueries:
        work_queries = self.q.work_queries(xq)
        return LutQueries(work_queries, np.zeros(work_queries.shape[0], np.float32), self.tables(work_queries))

    def scan(self, queries, segment, ranges, live, n_keep, score_scale, k=None):
        tables, codes = queries.tables, segment.codes
        bias = _bias(score_scale * queries.query_offset, ranges)
        args = (codes, segment.row_offset, segment.row_scale)
        if not parallel.scan_parallel(scanned_rows(ranges)):
            return ScanResult(*lut_scan_topk_serial(tables, *args, ranges, bias, live, n_keep))
        if tables.shape[0] == 1:  # one query: split its rows over the threads
            scores, rows = lut_scan_topk_split(tables[0], *args, ranges[0], bias[0], live, n_keep,
                                               max(1, parallel.active_threads()))
            return ScanResult(scores[None], rows[None])
        return ScanResult(*lut_scan_topk(tables, *args, ranges, bias, live, n_keep))


class DecodeScanner(Scanner):
    """Fallback: ⟨q, decode(code)⟩ through the quantiser's ``estimate_ip``, in blocks.

    It scans every row of the segment whatever the IVF ranges say (a superset of the probed lists, so
    results are never worse), because per-query row sets do not batch into one matrix product.
    """

    block = 16_384

    def prepare(self, xq: np.ndarray) -> PreparedQueries:
        return PreparedQueries(np.ascontiguousarray(xq, dtype=np.float32), np.zeros(xq.shape[0], np.float32))

    def scan(self, queries, segment, ranges, live, n_keep, score_scale, k=None):
        nq = queries.work_queries.shape[0]
        best_scores = np.full((nq, 0), -np.inf, dtype=np.float32)
        best_rows = np.full((nq, 0), -1, dtype=np.int64)
        codes, row_offset, row_scale = segment.codes, segment.row_offset, segment.row_scale
        for start in range(0, codes.shape[0], self.block):
            stop = start + self.block
            scores = self.q.estimate_ip(queries.work_queries, codes[start:stop]).astype(np.float32)
            if row_scale.size:
                scores *= row_scale[start:stop]
            if row_offset.size:
                scores += row_offset[start:stop]
            if live.size:
                scores[:, ~live[start:stop]] = -np.inf
            top, cols = topk_rows(np.ascontiguousarray(scores), min(n_keep, scores.shape[1]))
            cols = np.where(np.isfinite(top), cols + start, -1)
            best_scores, best_rows = merge_topk(best_scores, best_rows, top, cols, n_keep)
        return ScanResult(best_scores, best_rows)


@dataclass
class BinaryLayout:
    """A segment's sign codes laid out for the scan, and the per-row reconstruction terms."""

    sign_level: np.ndarray  # float32 (n,): decode = c + sign_level·(2b − 1)
    error: np.ndarray  # float32 (n,): RaBitQ error scale r·√(1 − ρ²)/(ρ√D) per unit query norm
    blocks: PackedCodes | None = None  # fast-scan blocks of the sign bits (kernels.fastscan.pack_fastscan)
    bounds: np.ndarray | None = None  # per-block row-term bounds (kernels.fastscan.term_bounds)
    transposed_words: np.ndarray | None = None  # popcount cascade: uint64 (W, n), kernels.scan.transpose_sign_words


#: Half-width of the RaBitQ confidence interval in units of the per-row error scale ‖q‖·r·√(1 − ρ²)/(ρ√D)
#: (Gao & Long 2024, Thm 3.2, use ε₀ = 1.9 for a near-certain bound).  Rows whose upper bound is below the
#: k-th best lower bound are not rescored.  Chosen on Debian-MiniLM as the smallest value that keeps recall
#: where no pruning has it (benchmarks/RESULTS.md, section 6, "RaBitQ confidence").
RABITQ_CONFIDENCE = 1.25

#: Binary codes are scanned as 4-bit fast-scan codes where the CPU has the AVX-512 kernels (faster than the
#: popcount cascade there, see benchmarks/RESULTS.md section 2), else by the popcount cascade.
BINARY_FASTSCAN = HAS_AVX512


class BinaryScanner(Scanner):
    """RaBitQ for ``binary`` codes: ⟨q,x⟩ ≈ ⟨q,c⟩ + (r/(ρ√D)) · Σ_i q_i (2b_i − 1).

    Two kernels compute the estimate:

    * **fast-scan** (``fastscan=True``): every 4 sign bits are a 4-bit code whose 16-entry table holds the
      query's signed sums of those 4 coordinates, so the sum above is a 4-bit PQ score that the SIMD
      fast-scan kernel computes from uint8 tables (:mod:`vqsearch.kernels.fastscan`), within M·Δ/2.  The
      ``n_keep`` rows it keeps are re-estimated exactly in float and re-ranked.
    * **popcount cascade**: a Hamming pass over the sign bits (vectorised popcount over transposed uint64
      words) keeps ``4·n_keep`` rows; the exact asymmetric estimate then picks ``n_keep``.

    Either way the scan also returns the exact ⟨q, decode(code)⟩ of the kept rows, which residual
    rescoring adds instead of decoding the codes again.
    """

    def __init__(self, q: Quantizer, fastscan: bool | None = None) -> None:
        super().__init__(q)
        self.fastscan = BINARY_FASTSCAN if fastscan is None else bool(fastscan)
        self.kernel = "fastscan" if self.fastscan else "popcount"

    def prepare(self, xq: np.ndarray) -> BinaryQueries:
        q = self.q
        work_queries = q.work_queries(xq)
        query_offset = (work_queries @ q.centroid).astype(np.float32)
        nibble_luts = sign_nibble_luts(work_queries, q.nbytes)
        if self.fastscan:
            tables = FastScanQueries(work_queries, query_offset, quantize_luts(
                nibble_luts, parallel=parallel.queries_parallel(work_queries.shape[0])))
            return BinaryQueries(work_queries, query_offset, nibble_luts, fastscan=tables)
        nwords = (q.nbytes + 7) // 8
        sign_bytes = np.zeros((work_queries.shape[0], nwords * 8), dtype=np.uint8)
        sign_bytes[:, : q.nbytes] = np.packbits(work_queries > 0, axis=1)
        return BinaryQueries(work_queries, query_offset, nibble_luts, query_words=sign_bytes.view("<u8"))

    def row_terms(self, codes: np.ndarray) -> ScanTerms:
        return self.q.scan_terms(codes)

    def segment_layout(self, codes, row_offset, row_scale, terms) -> BinaryLayout:
        codes = np.asarray(codes)
        layout = BinaryLayout(sign_level=self.q.sign_levels(codes), error=terms.error)
        if self.fastscan:
            layout.blocks = pack_fastscan(codes[:, : self.q.nbytes])
            layout.bounds = term_bounds(RowTerms.optional(row_offset, row_scale, layout.error), codes.shape[0])
        else:
            layout.transposed_words = transpose_sign_words(codes, self.q.nbytes)
        return layout

    def scan(self, queries, segment, ranges, live, n_keep, score_scale, k=None):
        layout: BinaryLayout = segment.layout
        codes, row_offset, row_scale = segment.codes, segment.row_offset, segment.row_scale
        par = parallel.scan_parallel(scanned_rows(ranges))
        query_offset = (score_scale * queries.query_offset).astype(np.float32)
        query_norms = np.sqrt(np.einsum("ij,ij->i", queries.work_queries, queries.work_queries))
        query_width = ((RABITQ_CONFIDENCE * score_scale) * query_norms).astype(np.float32)
        if layout.blocks is None:
            kernel = binary_cascade_topk if par else binary_cascade_topk_serial
            scores, rows, scan_ip = kernel(
                queries.work_queries, queries.query_words, layout.transposed_words, self.q.nbytes, row_offset,
                row_scale, query_offset, ranges, live, max(CASCADE_FACTOR * n_keep, 64), n_keep,
                queries.query_offset, layout.sign_level)
        else:
            tables = queries.fastscan.tables
            bias = _bias(query_offset, ranges)
            live_rows = live if live.size else None
            if k is not None and k < n_keep:  # only rows whose interval reaches the top k (a top-k heap + appends)
                terms = RowTerms.optional(row_offset, row_scale, layout.error, layout.bounds)
                _, kept = fastscan_candidates(tables, layout.blocks, ranges, k, n_keep, query_width, terms,
                                              bias=bias, live=live_rows, parallel=par)
            else:
                terms = RowTerms.optional(row_offset, row_scale, bounds=layout.bounds)
                _, kept = fastscan_topk(tables, layout.blocks, ranges, n_keep, bias=bias, live=live_rows,
                                        terms=terms, parallel=par)
            refine = binary_refine if par else binary_refine_serial
            scores, rows, scan_ip = refine(queries.nibble_luts, np.asarray(codes), kept, query_offset, row_offset,
                                           row_scale, queries.query_offset, layout.sign_level)
        width = (query_width[:, None] * layout.error[np.maximum(rows, 0)]).astype(np.float32)
        return ScanResult(scores, rows, scan_ip, width)


class PQScanner(LutScanner):
    """Asymmetric distance computation for ``pq``/``opq``: ⟨q, x⟩ = Σ_p ⟨q_p, C_p[code_p]⟩.

    8-bit codes use the per-sub-quantiser tables directly; 4-bit codes (two per byte) use one 256-entry
    table per byte that adds the two sub-quantisers' entries, so every code byte costs one lookup.
    """

    def prepare(self, xq: np.ndarray) -> LutQueries:
        q = self.q
        lut = q.lut(xq, "ip")  # (nq, M, K); PQ applies its own rotation to input-domain queries
        if q.nbits == 4:
            nq, m, _ = lut.shape
            if m % 2:
                lut = np.concatenate([lut, np.zeros((nq, 1, 16), np.float32)], axis=1)
            low, high = lut[:, 0::2, :], lut[:, 1::2, :]  # byte = low nibble | high nibble << 4
            lut = (low[:, :, None, :] + high[:, :, :, None]).reshape(nq, lut.shape[1] // 2, 256)
        return LutQueries(xq, np.zeros(xq.shape[0], np.float32), np.ascontiguousarray(lut, dtype=np.float32))


class FastScanPQScanner(Scanner):
    """4-bit ``pq``/``opq`` codes through the SIMD fast-scan kernel (:mod:`vqsearch.kernels.fastscan`).

    Tables are quantised to uint8 per query and looked up 64 at a time with byte permutes; the scan
    score is within M·Δ/2 of the float ADC score, which rescoring then refines.  Each segment's codes are
    re-laid once into 32-row blocks (:func:`~vqsearch.kernels.fastscan.pack_fastscan`), cached by the index.
    """

    kernel = "fastscan"

    def prepare(self, xq: np.ndarray) -> FastScanQueries:
        q = self.q
        rotated = q.rotate(q.work_queries(xq))
        tables = ip_luts_u8(rotated, q.centroids, parallel=parallel.queries_parallel(rotated.shape[0]))
        return FastScanQueries(xq, np.zeros(xq.shape[0], np.float32), tables)

    def segment_layout(self, codes, row_offset, row_scale, terms) -> tuple[PackedCodes, np.ndarray]:
        codes = np.asarray(codes)
        bounds = term_bounds(RowTerms.optional(row_offset, row_scale), codes.shape[0])
        return pack_fastscan(codes[:, : self.q.code_size]), bounds

    def scan(self, queries, segment, ranges, live, n_keep, score_scale, k=None):
        blocks, bounds = segment.layout
        terms = RowTerms.optional(segment.row_offset, segment.row_scale, bounds=bounds)
        scores, rows = fastscan_topk(queries.tables, blocks, ranges, n_keep, live=live if live.size else None,
                                     terms=terms, parallel=parallel.scan_parallel(scanned_rows(ranges)))
        return ScanResult(scores, rows)


def _pq_scanner(q: Quantizer) -> Scanner:
    return FastScanPQScanner(q) if q.nbits == 4 else PQScanner(q)


class TernaryScanner(LutScanner):
    """``ternary`` bitplane codes: ⟨q, α·t⟩ = α · (Σ_{t_i=+1} q_i − Σ_{t_i=−1} q_i), one table per plane byte."""

    def tables(self, work_queries: np.ndarray) -> np.ndarray:
        plus = bit_tables(work_queries, self.q.nbytes)
        return np.ascontiguousarray(np.concatenate([plus, -plus], axis=1), dtype=np.float32)

    def row_terms(self, codes: np.ndarray) -> ScanTerms:
        return self.q.scan_terms(codes)


def _ternary_scanner(q: Quantizer) -> Scanner:
    return TernaryScanner(q) if q.packing == "bitplanes" else DecodeScanner(q)


_SCANNERS: dict[str, Callable[[Quantizer], Scanner]] = {
    "binary": BinaryScanner, "pq": _pq_scanner, "opq": _pq_scanner, "ternary": _ternary_scanner,
}


def register_scanner(name: str, factory: Callable[[Quantizer], Scanner]) -> None:
    """Use ``factory`` to scan codes of quantiser family ``name`` (others get a :class:`DecodeScanner`)."""
    _SCANNERS[name] = factory


def scanner_for(q: Quantizer) -> Scanner:
    """The fastest available scanner for quantiser ``q``."""
    factory = _SCANNERS.get(q.name)
    return factory(q) if factory is not None else DecodeScanner(q)
