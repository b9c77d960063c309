"""Fast-scan entry points: fused top-k, confidence candidates, and integer sums.

Each entry point validates its arguments in Python, turns absent ones (``None``) into the empty arrays
the compiled body expects, and runs one numba function specialised on the :class:`~.block_kernels.KernelSet`
— so the SIMD kernels run where the host has them and the scalar twins elsewhere, with identical results.
Work is parallel over groups of :data:`~._scan_group.GROUPS_PER_TILE` kernel groups of queries
(``parallel=False``: one thread, for small calls that should not wake the thread pool).

Shapes: ``tables`` a :class:`~.luts.QueryTables` for ``nq`` queries; ``codes`` a :class:`~.layout.PackedCodes`
of ``n`` rows; ``ranges`` int64 (nq, R, 2) disjoint half-open row ranges per query (``start == stop`` pads;
any alignment: whole blocks are scored and rows outside are masked); ``bias`` float32 (nq, R) added to the
scores of range ``r`` (absent: 0); ``live`` bool (n,) (absent: every row); ``terms`` a
:class:`~.bounds.RowTerms`.  Scores are ``(Δ_q·S + offset_q)·b_i + a_i + bias[q, r]`` in float32, the
counterpart of the float reference ``b_i·Σ_p lut[q, p, c_p] + a_i + bias[q, r]``.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._variants import variant
from ._scan_group import GROUPS_PER_TILE, Candidates, Heaps, ScanInput, prune_candidates, scan_group
from .block_kernels import NATIVE, KernelSet, expand_luts, score_pshufb32, score_vbmi
from .bounds import RowTerms
from .layout import BLOCK, PackedCodes
from .luts import QueryTables

_NO_ROWS_F32 = np.zeros(0, dtype=np.float32)
_NO_LIVE = np.zeros(0, dtype=np.bool_)
_NO_BOUNDS = np.zeros((0, 4), dtype=np.float32)
_NO_TERMS = RowTerms()


# ------------------------------------------------------------------------------ compiled bodies
# The compiled bodies take the scan's arrays one by one, so that numba's dispatcher types them on its fast
# path (a nested tuple is typed field by field in Python, tens of microseconds per call); they are
# repacked into the typed tuples inside (free: the tuples are only names for the same arrays), after
# ``prange``, whose parallel loop bodies take arrays and scalars but not tuples of arrays.
def _topk_impl(kernels, lut_u8, scale, offset, bias, blocks, n, ranges, live, shift, factor, error, bounds,
               query_width, k):
    nq = lut_u8.shape[0]
    group = (kernels.vbmi_queries if blocks.ndim == 4 else kernels.pshufb_queries) * GROUPS_PER_TILE
    scores = np.full((nq, k), -np.inf, dtype=np.float32)
    rows = np.full((nq, k), -1, dtype=np.int64)
    for g in prange((nq + group - 1) // group):
        q0 = g * group
        scan = ScanInput(QueryTables(lut_u8, scale, offset), bias, blocks, n, ranges, live,
                         RowTerms(shift, factor, error, bounds), query_width)
        no_cands = Candidates(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int64), np.zeros(0, np.int64),
                              np.zeros(0, np.float32))
        scan_group(kernels, scan, Heaps(scores, rows), no_cands, q0, min(group, nq - q0))
    return scores, rows


def _candidates_impl(kernels, lut_u8, scale, offset, bias, blocks, n, ranges, live, shift, factor, error, bounds,
                     query_width, k, keep):
    nq = lut_u8.shape[0]
    group = (kernels.vbmi_queries if blocks.ndim == 4 else kernels.pshufb_queries) * GROUPS_PER_TILE
    scores = np.full((nq, k), -np.inf, dtype=np.float32)
    rows = np.full((nq, k), -1, dtype=np.int64)
    capacity = 2 * keep
    cand_scores = np.empty((nq, capacity), np.float32)
    cand_rows = np.empty((nq, capacity), np.int64)
    cand_count = np.zeros(nq, np.int64)
    cand_floor = np.full(nq, -np.inf, np.float32)
    out_scores = np.full((nq, keep), -np.inf, dtype=np.float32)
    out_rows = np.full((nq, keep), -1, dtype=np.int64)
    for g in prange((nq + group - 1) // group):
        q0 = g * group
        qn = min(group, nq - q0)
        scan = ScanInput(QueryTables(lut_u8, scale, offset), bias, blocks, n, ranges, live,
                         RowTerms(shift, factor, error, bounds), query_width)
        scan_group(kernels, scan, Heaps(scores, rows), Candidates(cand_scores, cand_rows, cand_count, cand_floor),
                   q0, qn)
        for q in range(q0, q0 + qn):
            root = scores[q, k - 1]  # the heap is sorted: its k-th largest lower bound is last
            count, _ = prune_candidates(cand_scores[q], cand_rows[q], cand_count[q], root, query_width[q], error,
                                        keep, cand_floor[q])
            for t in range(count):
                out_scores[q, t] = cand_scores[q, t]
                out_rows[q, t] = cand_rows[q, t]
    return out_scores, out_rows


def _sums_impl(kernels, lut_u8, blocks, n):
    vbmi = blocks.ndim == 4
    nq = lut_u8.shape[0]
    nsteps = blocks.shape[1]
    block_bytes = 1
    for d in blocks.shape[1:]:
        block_bytes *= d
    out = np.empty((nq, n), dtype=np.uint16)
    for q in prange(nq):
        sums = np.empty((1, 64), dtype=np.uint16)
        masks = np.empty(1, dtype=np.int64)
        min_sums = np.zeros(1, dtype=np.int64)
        scratch = np.empty(nsteps * 128 + 64, dtype=np.uint8)
        lut_base, lut_stride = expand_luts(lut_u8, q, 1, nsteps, vbmi, scratch)
        for b in range((n + 31) // 32):
            if vbmi:
                score_vbmi(kernels, 1, scratch, lut_base, lut_stride, blocks, b * block_bytes, 0, nsteps, min_sums,
                           sums, masks)
            else:
                score_pshufb32(kernels, 1, scratch, lut_base, lut_stride, blocks, b * block_bytes, 0, nsteps,
                               min_sums, sums, masks)
            for t in range(min(32, n - 32 * b)):
                out[q, 32 * b + t] = sums[0, t]
    return out


_TOPK = {True: variant(_topk_impl, "fastscan_topk_parallel", parallel=True),
         False: variant(_topk_impl, "fastscan_topk_serial")}
_CANDIDATES = {True: variant(_candidates_impl, "fastscan_candidates_parallel", parallel=True),
               False: variant(_candidates_impl, "fastscan_candidates_serial")}
_SUMS = {True: variant(_sums_impl, "fastscan_sums_parallel", parallel=True),
         False: variant(_sums_impl, "fastscan_sums_serial")}


# ------------------------------------------------------------------------------ validation
def _check_tables(tables: QueryTables, codes: PackedCodes) -> QueryTables:
    lut_u8, scale, offset = tables
    lut_u8 = np.ascontiguousarray(lut_u8, dtype=np.uint8)
    nq = lut_u8.shape[0]
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    offset = np.ascontiguousarray(offset, dtype=np.float32)
    if lut_u8.ndim != 3 or lut_u8.shape[2] != 16 or scale.shape != (nq,) or offset.shape != (nq,):
        raise ValueError(f"fast-scan: tables must be lut_u8 (nq, M, 16) with scale and offset (nq,), got "
                         f"{lut_u8.shape}, {scale.shape}, {offset.shape}")
    _check_codes(lut_u8, codes)
    return QueryTables(lut_u8, scale, offset)


def _check_codes(lut_u8: np.ndarray, codes: PackedCodes) -> None:
    blocks = codes.blocks
    if blocks.dtype != np.uint8 or blocks.ndim not in (3, 4) or not blocks.flags.c_contiguous:
        raise ValueError("fast-scan: codes must come from pack_fastscan (C-contiguous uint8, 3-D or 4-D)")
    per_step = 8 if blocks.ndim == 4 else 2  # sub-quantisers per step of the layout
    if lut_u8.shape[1] > per_step * blocks.shape[1] or lut_u8.shape[1] <= per_step * (blocks.shape[1] - 1):
        raise ValueError(f"fast-scan: {lut_u8.shape[1]} tables do not match packed codes of {blocks.shape[1]} "
                         f"steps of {per_step} sub-quantisers")
    if not 0 <= codes.n <= blocks.shape[0] * BLOCK:
        raise ValueError(f"fast-scan: {codes.n} rows do not fit the {blocks.shape[0]} packed blocks")


def _rows_or_empty(values: np.ndarray | None, n: int, name: str, dtype) -> np.ndarray:
    if values is None:
        return _NO_LIVE if dtype == np.bool_ else _NO_ROWS_F32
    values = np.ascontiguousarray(values, dtype=dtype)
    if values.ndim != 1 or values.shape[0] < n:
        raise ValueError(f"fast-scan: {name} must have one entry per row ({n}), got shape {values.shape}")
    return values


def _scan_arguments(tables, codes, ranges, bias, live, terms, with_error, query_width) -> tuple:
    """Validated arrays in the compiled bodies' argument order (after the kernel set), absent ones empty:
    (lut_u8, scale, offset, bias, blocks, n, ranges, live, shift, factor, error, bounds, query_width)."""
    lut_u8, scale, offset = _check_tables(tables, codes)
    nq, n = lut_u8.shape[0], codes.n
    ranges = np.ascontiguousarray(ranges, dtype=np.int64)
    if ranges.ndim != 3 or ranges.shape[0] != nq or ranges.shape[2] != 2:
        raise ValueError(f"fast-scan: ranges must be (nq={nq}, R, 2), got shape {ranges.shape}")
    if bias is None:
        bias = np.zeros(ranges.shape[:2], dtype=np.float32)
    bias = np.ascontiguousarray(bias, dtype=np.float32)
    if bias.shape != ranges.shape[:2]:
        raise ValueError(f"fast-scan: bias must be (nq, R) = {ranges.shape[:2]}, got shape {bias.shape}")
    terms = _NO_TERMS if terms is None else terms
    bounds = _NO_BOUNDS if terms.bounds is None else np.ascontiguousarray(terms.bounds, dtype=np.float32)
    if bounds.shape[0] and bounds.shape != (codes.blocks.shape[0], 4):
        raise ValueError(f"fast-scan: bounds must be term_bounds(terms, n), shape ({codes.blocks.shape[0]}, 4), "
                         f"got {bounds.shape}")
    error = _rows_or_empty(terms.error, n, "terms.error", np.float32) if with_error else _NO_ROWS_F32
    return (lut_u8, scale, offset, bias, codes.blocks, int(n), ranges, _rows_or_empty(live, n, "live", np.bool_),
            _rows_or_empty(terms.shift, n, "terms.shift", np.float32),
            _rows_or_empty(terms.factor, n, "terms.factor", np.float32), error, bounds, query_width)


# ------------------------------------------------------------------------------ entry points
def fastscan_topk(tables: QueryTables, codes: PackedCodes, ranges: np.ndarray, k: int, *,
                  bias: np.ndarray | None = None, live: np.ndarray | None = None, terms: RowTerms | None = None,
                  parallel: bool = True, kernels: KernelSet = NATIVE) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` rows per query by fast-scan score → (scores float32 (nq, k), rows int64 (nq, k)), best
    first, ``-inf``/``-1`` where fewer than ``k`` rows qualify.  ``terms.error`` is ignored."""
    if k < 1:
        raise ValueError(f"fast-scan: k must be >= 1, got {k}")
    args = _scan_arguments(tables, codes, ranges, bias, live, terms, False, _NO_ROWS_F32)
    return _TOPK[bool(parallel)](kernels, *args, int(k))


def fastscan_candidates(tables: QueryTables, codes: PackedCodes, ranges: np.ndarray, k: int, keep: int,
                        query_width: np.ndarray, terms: RowTerms, *, bias: np.ndarray | None = None,
                        live: np.ndarray | None = None, parallel: bool = True,
                        kernels: KernelSet = NATIVE) -> tuple[np.ndarray, np.ndarray]:
    """Rows that may be among the best ``k`` given a confidence interval ``± query_width[q]·terms.error[i]``
    around each score, at most ``keep`` of them → (scores (nq, keep), rows (nq, keep)), unordered, padded
    with (−inf, −1).

    The scan keeps a top-``k`` heap of lower bounds ``s − w`` (exact: every row that could enter it is
    scored) and buffers rows whose upper bound ``s + w`` reaches the heap's smallest.  When the buffer
    (2·keep) fills, rows whose upper bound fell below are dropped and at most the ``keep`` best by score
    are kept; the smallest kept score becomes a floor under which rows are no longer buffered.  At the end
    the rows below the final k-th lower bound are dropped and at most the ``keep`` best by score returned:
    the rows of a top-``keep`` scan that pass the confidence test (up to rows shed by a floor whose better
    rows later fail the test), for a top-``k`` heap and appends instead of a top-``keep`` heap.
    """
    if not 1 <= k <= keep:
        raise ValueError(f"fast-scan: need 1 <= k <= keep, got k={k}, keep={keep}")
    if terms.error is None:
        raise ValueError("fast-scan: the confidence scan needs terms.error (per-row interval half-widths)")
    nq = np.shape(tables[0])[0]
    query_width = np.ascontiguousarray(query_width, dtype=np.float32)
    if query_width.shape != (nq,):
        raise ValueError(f"fast-scan: query_width must be ({nq},), got shape {query_width.shape}")
    args = _scan_arguments(tables, codes, ranges, bias, live, terms, True, query_width)
    return _CANDIDATES[bool(parallel)](kernels, *args, int(k), int(keep))


def fastscan_sums(lut_u8: np.ndarray, codes: PackedCodes, *, parallel: bool = True,
                  kernels: KernelSet = NATIVE) -> np.ndarray:
    """Integer sums ``S[q, i] = Σ_p lut_u8[q, p, code_{i,p}]`` of every row → uint16 (nq, n) (tests, re-scoring)."""
    lut_u8 = np.ascontiguousarray(lut_u8, dtype=np.uint8)
    if lut_u8.ndim != 3 or lut_u8.shape[2] != 16:
        raise ValueError(f"fast-scan: lut_u8 must be (nq, M, 16), got shape {lut_u8.shape}")
    _check_codes(lut_u8, codes)
    return _SUMS[bool(parallel)](kernels, lut_u8, codes.blocks, int(codes.n))


def compiled_entry(entry, parallel: bool = True):
    """The numba dispatcher behind the entry point ``entry`` (e.g. to read its cache ``stats``)."""
    table = {fastscan_topk: _TOPK, fastscan_candidates: _CANDIDATES, fastscan_sums: _SUMS}
    return table[entry][bool(parallel)]
