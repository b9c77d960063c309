"""4-bit PQ "fast-scan": uint8 lookup tables held in SIMD registers, byte shuffles, fused top-k.

Why: a 4-bit sub-quantiser has 16 centroids, so its table fits one 16-byte SIMD lane and a byte shuffle
looks up 32–64 rows at once, where :func:`~vqsearch.kernels.scan.lut_scan_topk` does one scalar float
load per code byte.  The same kernels scan binary sign codes (every 4 sign bits are one 4-bit code).

Read top-down:

* :mod:`.layout` — codes re-laid into blocks of 32 rows (:func:`pack_fastscan` → :class:`PackedCodes`);
* :mod:`.luts` — float tables and their uint8 quantisation (:class:`QueryTables`);
* :mod:`.bounds` — per-row score terms (:class:`RowTerms`), their bounds and the integer thresholds;
* :mod:`.scans` — the entry points :func:`fastscan_topk`, :func:`fastscan_candidates`, :func:`fastscan_sums`;
* :mod:`._scan_group` — the fused loop over one group of queries;
* :mod:`.block_kernels` — the block-kernel contract, :class:`KernelSet` (SIMD or scalar, chosen per call);
* :mod:`._intrinsics` — the LLVM IR of the SIMD kernels; :mod:`.twins` — their scalar twins.

Typical use::

    packed = pack_fastscan(codes)                       # once per segment
    tables = ip_luts_u8(queries, centroids)             # per query batch
    scores, rows = fastscan_topk(tables, packed, ranges, k)
"""

from .._cpu import HAS_AVX2, HAS_AVX512, HAS_SIMD_FASTSCAN, HAS_VBMI
from .block_kernels import NATIVE, SCALAR, KernelSet, available_kernel_sets
from .bounds import RowTerms, term_bounds
from .layout import BLOCK, DEFAULT_LAYOUT, LAYOUTS, PackedCodes, pack_fastscan, unpack_fastscan
from .luts import QueryTables, ip_luts, ip_luts_u8, max_level, quantize_luts
from .scans import fastscan_candidates, fastscan_sums, fastscan_topk

__all__ = [
    "BLOCK", "DEFAULT_LAYOUT", "HAS_AVX2", "HAS_AVX512", "HAS_SIMD_FASTSCAN", "HAS_VBMI", "LAYOUTS", "NATIVE",
    "SCALAR", "KernelSet", "PackedCodes", "QueryTables", "RowTerms", "available_kernel_sets", "fastscan_candidates",
    "fastscan_sums", "fastscan_topk", "ip_luts", "ip_luts_u8", "max_level", "pack_fastscan", "quantize_luts",
    "term_bounds", "unpack_fastscan",
]
