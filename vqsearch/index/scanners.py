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
* :class:`BinaryScanner` — sign bits: a popcount (Hamming) pass keeps ``4·kk`` rows,
  then RaBitQ's unbiased asymmetric estimate picks ``kk``
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

from ..kernels.fastscan import fastscan_topk, fastscan_topk_serial, ip_luts_u8, pack_fastscan
from ..kernels.scan import (
    binary_cascade_topk,
    binary_cascade_topk_serial,
    lut_scan_topk,
    lut_scan_topk_serial,
    lut_scan_topk_split,
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

    def segment_data(self, codes: np.ndarray) -> object:
        """Anything derived from a segment's codes once (e.g. a kernel-friendly layout); cached by the index."""
        return None

    def scan(self, prep: Prepared, codes: np.ndarray, row_a: np.ndarray, row_b: np.ndarray,
             ranges: np.ndarray, live: np.ndarray, kk: int, scale: float,
             seg_data: object = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Best ``kk`` rows per query over ``ranges`` of one segment → (scores, rows, ip), (nq, kk) each.

        ``scale`` multiplies the per-query constants (2 for the l2 ranking 2⟨q,x⟩ − ‖x‖²).  ``ip`` is the
        exact ⟨q, decode(code)⟩ of each kept row when the scanner gets it for free, else ``None``.
        """
        raise NotImplementedError


class LutScanner(Scanner):
    """Byte lookup tables; subclasses provide :meth:`tables`."""

    def tables(self, qw: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, xq: np.ndarray) -> Prepared:
        qw = self.q.work_queries(xq)
        return Prepared(qw, np.zeros(qw.shape[0], np.float32), {"tables": self.tables(qw)})

    def scan(self, prep, codes, row_a, row_b, ranges, live, kk, scale, seg_data=None):
        tables = prep.extra["tables"]
        bias = np.ascontiguousarray(np.broadcast_to((scale * prep.qconst)[:, None], ranges.shape[:2]),
                                    dtype=np.float32)
        work = scanned_rows(ranges)
        if work < PARALLEL_MIN_WORK:
            return (*lut_scan_topk_serial(tables, codes, row_a, row_b, ranges, bias, live, kk), None)
        if tables.shape[0] == 1:  # one query: split its rows over the threads
            v, r = lut_scan_topk_split(tables[0], codes, row_a, row_b, ranges[0], bias[0], live, kk,
                                       max(1, numba.get_num_threads()))
            return v[None], r[None], None
        return (*lut_scan_topk(tables, codes, row_a, row_b, ranges, bias, live, kk), None)


class DecodeScanner(Scanner):
    """Fallback: ⟨q, decode(code)⟩ through the quantiser's ``estimate_ip``, in blocks.

    It scans every row of the segment whatever the IVF ranges say (a superset of the probed lists, so
    results are never worse), because per-query row sets do not batch into one matrix product.
    """

    block = 16_384

    def prepare(self, xq: np.ndarray) -> Prepared:
        return Prepared(np.ascontiguousarray(xq, dtype=np.float32), np.zeros(xq.shape[0], np.float32))

    def scan(self, prep, codes, row_a, row_b, ranges, live, kk, scale, seg_data=None):
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
        return best_v, best_r, None


@dataclass
class BinarySegment:
    """A segment's sign codes laid out for the scan: transposed words and per-row reconstruction levels."""

    words_t: np.ndarray  # uint64 (W, n), see kernels.scan.transpose_sign_words
    level: np.ndarray  # float32 (n,): decode = c + level·(2b − 1)


class BinaryScanner(Scanner):
    """RaBitQ for ``binary`` codes: ⟨q,x⟩ ≈ ⟨q,c⟩ + (r/(ρ√D)) · Σ_i q_i (2b_i − 1).

    A Hamming pass over the sign bits (vectorised popcount over transposed uint64 words) keeps
    ``4·kk`` rows; the unbiased asymmetric estimate then picks ``kk``.  The scan also returns the exact
    ⟨q, decode(code)⟩ of the kept rows, which residual rescoring adds instead of decoding the codes again.
    """

    def prepare(self, xq: np.ndarray) -> Prepared:
        q = self.q
        qw = q.work_queries(xq)
        qconst = (qw @ q.centroid).astype(np.float32)
        nwords = (q.nbytes + 7) // 8
        qbytes = np.zeros((qw.shape[0], nwords * 8), dtype=np.uint8)
        qbytes[:, : q.nbytes] = np.packbits(qw > 0, axis=1)
        return Prepared(qw, qconst, {"qwords": qbytes.view("<u8")})

    def row_terms(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r, rho = self.q.factors(np.asarray(codes))
        with np.errstate(invalid="ignore", divide="ignore"):
            coef = np.where(rho > 0, r / rho, 0.0) / np.sqrt(self.q._d_work)
        return EMPTY_F32, coef.astype(np.float32)

    def segment_data(self, codes: np.ndarray) -> BinarySegment:
        codes = np.asarray(codes)
        r, rho = self.q.factors(codes)
        level = (r * rho / np.float32(np.sqrt(self.q._d_work))).astype(np.float32)  # as BinaryQuantizer decodes
        return BinarySegment(transpose_sign_words(codes, self.q.nbytes), level)

    def scan(self, prep, codes, row_a, row_b, ranges, live, kk, scale, seg_data=None):
        seg = self.segment_data(codes) if seg_data is None else seg_data
        m = max(CASCADE_FACTOR * kk, 64)
        kernel = binary_cascade_topk if scanned_rows(ranges) >= PARALLEL_MIN_WORK else binary_cascade_topk_serial
        return kernel(prep.qw, prep.extra["qwords"], seg.words_t, self.q.nbytes, row_a, row_b,
                      (scale * prep.qconst).astype(np.float32), ranges, live, m, kk, prep.qconst, seg.level)


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
        lut_u8, scale, offset = ip_luts_u8(qw, q.centroids, parallel=qw.shape[0] > 1)
        return Prepared(xq, np.zeros(xq.shape[0], np.float32), {"lut": lut_u8, "scale": scale, "offset": offset})

    def segment_data(self, codes: np.ndarray) -> np.ndarray:
        return pack_fastscan(np.asarray(codes)[:, : self.q.code_size])

    def scan(self, prep, codes, row_a, row_b, ranges, live, kk, scale, seg_data=None):
        blocks = self.segment_data(codes) if seg_data is None else seg_data
        x = prep.extra
        bias = np.zeros(ranges.shape[:2], dtype=np.float32)
        kernel = fastscan_topk if scanned_rows(ranges) >= PARALLEL_MIN_WORK else fastscan_topk_serial
        v, r = kernel(x["lut"], x["scale"], x["offset"], bias, blocks, codes.shape[0], ranges, live, row_a, row_b, kk)
        return v, r, None


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
