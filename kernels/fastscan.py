"""4-bit PQ "fast-scan": uint8 lookup tables held in SIMD registers, byte shuffles, fused top-k.

Why: a 4-bit sub-quantiser has 16 centroids, so its table fits one 16-byte SIMD lane and a byte
shuffle looks up 32–64 rows at once, where :func:`~.scan.lut_scan_topk` does one scalar float
load per code byte.  Plain numba cannot emit shuffles, so the block kernels are ``@intrinsic``
functions that build LLVM IR (llvmlite) calling the x86 shuffle intrinsics directly.

**Codes.**  Input is the plain PQ layout, uint8 ``(n, B)`` with ``B = ceil(M / 2)``: byte ``j``
holds sub-quantiser ``2j`` in its low nibble and ``2j + 1`` in its high nibble (odd ``M``: the
last high nibble is a phantom sub-quantiser whose table is all zeros).  :func:`pack_fastscan`
re-lays rows into blocks of 32 (the last block padded with zero codes) in one of two layouts:

* ``"pshufb"`` — ``blocks[b, j, t]`` uint8 ``(nblocks, B, 32)``: for each code byte ``j`` the
  32 rows' bytes are contiguous; byte position ``t = 2u + h`` (``u < 16``, ``h ∈ {0, 1}``) holds
  row ``32b + 16h + u``, so read as sixteen uint16 lanes the low bytes are rows 0–15 of the block
  and the high bytes rows 16–31.  Kernels: AVX2 ``vpshufb`` (32 rows) and AVX-512BW (64 rows =
  two blocks per instruction).
* ``"vbmi"`` — ``blocks[b, c, r, i]`` uint8 ``(nblocks, C, 32, 4)`` with ``C = ceil(B / 4)``:
  code bytes ``4c..4c+3`` of row ``32b + r`` (sub-quantisers ``8c..8c+7``, zero-padded), i.e.
  row-major 4-byte chunks.  Kernel: AVX-512 VBMI ``vpermb`` looks up 64 bytes in a 64-byte
  register holding four 16-entry tables (selected by bits 4–5 of the index, set from the byte's
  position in its dword), and AVX-512 VNNI ``vpdpbusd`` adds each dword's four looked-up bytes —
  four sub-quantisers of one row — into that row's int32 lane.  Two instructions per 64 lookups
  instead of four for the ``pshufb`` kernels (measured ≈ 2× faster).

:data:`DEFAULT_LAYOUT` is ``"vbmi"`` when the host has AVX-512 VBMI + VNNI, else ``"pshufb"``; the
layout is a property of the packed array (3-D vs 4-D), so either runs anywhere (a pure-numba
scalar kernel with identical results replaces the SIMD kernel the host cannot run).

**Tables.**  :func:`quantize_luts` maps float tables ``lut[q, p, c] = ⟨q_p, C_p[c]⟩`` to uint8
``lut_u8[q, p, c] = round((lut[q, p, c] − min_p) / Δ_q)`` with one scale per query
``Δ_q = max_p (max_p − min_p) / L`` and ``L = min(255, 65535 // M)`` levels, so a row's sum of
``M`` entries fits in uint16.  With ``offset_q = Σ_p min_p`` and the integer sum
``S_{q,i} = Σ_p lut_u8[q, p, c_{i,p}]``, ``Σ_p lut[q, p, c_{i,p}] ≈ offset_q + Δ_q·S_{q,i}``
within ``M·Δ_q / 2``.

**Accumulation** (exact, no saturating instructions).  ``pshufb``: per code byte, the nibbles
index the lane-broadcast tables of sub-quantisers ``2j`` and ``2j + 1``; each result ``r`` is added
to two uint16 accumulators, ``F += r`` (lanes read as low + 256·high, wrapping) and ``H += r >> 8``
(high bytes); at the end ``F − 256·H`` is the exact low-byte sum and ``H`` the high-byte sum (both
< 65536, so the wrap-around cancels).  ``vbmi``: int32 lanes (``vpdpbusd``, not the saturating
``vpdpbusds``), truncated to uint16 at the end.

**Scan** (:data:`fastscan_topk`).  Scores (float32, in this order) are
``s = (Δ_q·S + offset_q)·row_b[i] + row_a[i] + bias[q, r]``, the counterpart of the float
reference ``row_b[i]·Σ_p lut[q, p, c_p] + row_a[i] + bias[q, r]`` (empty ``row_a``/``row_b`` mean
0 / 1).  Inputs: ``lut_u8`` uint8 (nq, M + M % 2, 16) C-contiguous, ``scale``/``offset`` float32
(nq,), ``bias`` float32 (nq, R), ``blocks`` from :func:`pack_fastscan`, ``n`` real rows,
``ranges`` int64 (nq, R, 2) disjoint half-open row ranges (``start == stop`` pads; any alignment:
whole blocks are scored and rows outside are masked), ``live`` bool (n,) or empty, ``row_a``/
``row_b`` float32 (n,) or empty, ``bounds`` from :func:`term_bounds` or empty (shape (0, 4): the
bounds are then taken from the range's rows).  Returns best-first (scores (nq, k) float32, rows
(nq, k) int64), ``-inf``/``-1`` where fewer than ``k`` rows qualify.

:data:`fastscan_candidates` is the same scan for estimates with a confidence interval ``± w_i``
(RaBitQ): a top-k heap of lower bounds ``s − w`` and a buffer of the rows whose upper bound reaches
it, instead of a top-kk heap (see :func:`_confident_impl`).

Consecutive queries with identical ranges (flat search) are scored together, 8 (AVX-512) or 4
(AVX2) per code load, amortising code loads and nibble splits as FAISS's ``qbs`` does; several
such groups walk the rows in tiles of about 256 KiB of codes so that each tile comes from L2.  Each
kernel call also compares its 32/64 sums with a per-query integer threshold derived from the
heap's smallest score and returns a bit mask, so scalar code only touches rows that may enter the
heap.  With per-row terms the threshold holds for the range's bounds (max ``a``, min/max ``b ≥ 0``,
per 32-row block in ``bounds``; none when some ``b < 0``).  Kernel
tables are re-laid per query into an aligned scratch buffer (lane-broadcast for ``pshufb``, so
table loads need no shuffle port).  Alternatives measured while tuning are listed in the docstring of
``benchmarks/bench_fastscan.py``.
"""

from __future__ import annotations

import math
import types as pytypes

import llvmlite.binding as llb
import numpy as np
from llvmlite import ir
from numba import config, njit, prange, types
from numba.extending import intrinsic

from ._variants import variant
from .topk import heap_replace_root, heap_to_sorted, top_k_unordered

#: Rows per block.
BLOCK = 32


def _target_features() -> dict[str, bool]:
    """CPU features numba compiles for: the host's, or ``NUMBA_CPU_FEATURES`` when ``NUMBA_CPU_NAME`` is set."""
    if config.CPU_NAME:
        flags = (config.CPU_FEATURES or "").split(",")
        return {f[1:]: f[0] == "+" for f in flags if f[:1] in "+-" and len(f) > 1}
    try:
        return dict(llb.get_host_cpu_features())
    except RuntimeError:  # platform without feature detection: scalar kernels only
        return {}


_FEATURES = _target_features()


def _has(*names: str) -> bool:
    return all(_FEATURES.get(n, False) for n in names)


#: The AVX2 ``vpshufb`` kernel (32 rows per call) can run.
HAS_AVX2 = _has("avx2")
#: The AVX-512BW ``vpshufb`` kernel (64 rows per call) can run.
HAS_AVX512 = _has("avx512f", "avx512bw")
#: The AVX-512 VBMI + VNNI kernel (``"vbmi"`` layout) can run.
HAS_VBMI = _has("avx512f", "avx512bw", "avx512vbmi", "avx512vnni")
#: Layout :func:`pack_fastscan` produces by default: the fastest one this host runs natively.
DEFAULT_LAYOUT = "vbmi" if HAS_VBMI else "pshufb"

# Queries per code load (measured single-threaded on 60k × PQ96x4, see benchmarks/bench_fastscan.py):
# AVX2 runs out of its 16 registers above 4; AVX-512 kernels have 32.
_QB_AVX2 = 4
_QB_AVX512 = 8
_QB_VBMI = 8
# Row tiling: query groups per parallel work item, and the bytes of codes each visits before moving on.
_GROUPS_PER_TILE = 4
_TILE_BYTES = 256 * 1024


# ------------------------------------------------------------------------------- layout
def pack_fastscan(codes: np.ndarray, layout: str | None = None) -> np.ndarray:
    """Plain PQ4 codes uint8 (n, B) → blocks of 32 rows in ``layout`` (default :data:`DEFAULT_LAYOUT`).

    ``"pshufb"`` → (ceil(n / 32), B, 32); ``"vbmi"`` → (ceil(n / 32), ceil(B / 4), 32, 4).
    """
    layout = DEFAULT_LAYOUT if layout is None else layout
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (n, B), got shape {codes.shape}")
    n, nbytes = codes.shape
    nblocks = (n + BLOCK - 1) // BLOCK
    if layout == "pshufb":
        padded = np.zeros((nblocks * BLOCK, nbytes), dtype=np.uint8)
        padded[:n] = codes
        # row 32b + 16h + u → byte position 2u + h
        out = padded.reshape(nblocks, 2, 16, nbytes).transpose(0, 3, 2, 1)
        return np.ascontiguousarray(out).reshape(nblocks, nbytes, BLOCK)
    if layout == "vbmi":
        nchunks = (nbytes + 3) // 4
        padded = np.zeros((nblocks * BLOCK, nchunks * 4), dtype=np.uint8)
        padded[:n, :nbytes] = codes
        return np.ascontiguousarray(padded.reshape(nblocks, BLOCK, nchunks, 4).transpose(0, 2, 1, 3))
    raise ValueError(f"unknown fast-scan layout {layout!r} (expected 'pshufb' or 'vbmi')")


def fastscan_layout(blocks: np.ndarray) -> str:
    """Layout name of a packed array (from its number of dimensions)."""
    return {3: "pshufb", 4: "vbmi"}[blocks.ndim]


def unpack_fastscan(blocks: np.ndarray, n: int, nbytes: int | None = None) -> np.ndarray:
    """Inverse of :func:`pack_fastscan` → plain codes uint8 (n, nbytes) (``"vbmi"`` pads B to a multiple of 4)."""
    nblocks = blocks.shape[0]
    if blocks.ndim == 3:
        nb = blocks.shape[1]
        plain = blocks.reshape(nblocks, nb, 16, 2).transpose(0, 3, 2, 1).reshape(nblocks * BLOCK, nb)
    else:
        nb = blocks.shape[1] * 4
        plain = blocks.transpose(0, 2, 1, 3).reshape(nblocks * BLOCK, nb)
    return np.ascontiguousarray(plain[:n, : nb if nbytes is None else nbytes])


# ------------------------------------------------------------------------ LUT quantisation
@njit(cache=True, nogil=True, inline="always")
def _quantize_one(tab, out, mins, levels):
    """Quantise one query's float tables (M, 16) into ``out`` (≥ M, 16) uint8 → (scale Δ, offset Σ_p min_p)."""
    m = tab.shape[0]
    width = np.float32(0.0)
    total = 0.0
    for p in range(m):
        lo = tab[p, 0]
        hi = tab[p, 0]
        for c in range(1, 16):
            v = tab[p, c]
            lo = v if v < lo else lo
            hi = v if v > hi else hi
        mins[p] = lo
        width = max(width, hi - lo)
        total += lo
    out[m:] = 0
    if not (width > 0):
        out[:m] = 0
        return np.float32(0.0), np.float32(total)
    inv = np.float32(levels) / width  # (max_p - min_p)·inv ≤ levels (+ rounding), so no clamp is needed
    half = np.float32(0.5)
    for p in range(m):
        lo = mins[p]
        for c in range(16):
            out[p, c] = np.uint8(np.int32((tab[p, c] - lo) * inv + half))  # round half up
    return width / np.float32(levels), np.float32(total)


def _quantize_luts_impl(lut, mpad, levels):
    nq = lut.shape[0]
    out = np.empty((nq, mpad, 16), dtype=np.uint8)
    scale = np.empty(nq, dtype=np.float32)
    offset = np.empty(nq, dtype=np.float32)
    for q in prange(nq):
        mins = np.empty(lut.shape[1], dtype=np.float32)
        scale[q], offset[q] = _quantize_one(lut[q], out[q], mins, levels)
    return out, scale, offset


# nnan/nsz let LLVM simplify the min/max selects; no reassociation or contraction, so sums keep their order.
_QFLAGS = {"fastmath": {"nnan", "ninf", "nsz"}}
_quantize_luts = variant(_quantize_luts_impl, "_quantize_luts", parallel=True, **_QFLAGS)
_quantize_luts_serial = variant(_quantize_luts_impl, "_quantize_luts_serial", **_QFLAGS)


def _levels(m: int) -> int:
    return min(255, 65535 // max(m, 1))


def quantize_luts(lut: np.ndarray, parallel: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float tables (nq, M, 16) → (lut_u8 (nq, M + M % 2, 16), scale Δ (nq,), offset Σ_p min_p (nq,)).

    Entries are at most ``min(255, 65535 // M)`` so a row's sum fits in uint16; the extra table for
    odd ``M`` is zero.  A query whose tables are all constant gets Δ = 0 and all-zero tables.
    """
    lut = np.ascontiguousarray(lut, dtype=np.float32)
    if lut.ndim != 3 or lut.shape[2] != 16:
        raise ValueError(f"lut must be (nq, M, 16), got shape {lut.shape}")
    m = lut.shape[1]
    fn = _quantize_luts if parallel else _quantize_luts_serial
    return fn(lut, m + (m & 1), _levels(m))


@njit(cache=True, nogil=True, inline="always")
def _ip_tables(x, ct, tab):
    """tab[p, c] = Σ_d x[p·dsub + d]·ct[p, d, c] (summed in d order; ``ct`` = centroids transposed, (M, dsub, 16))."""
    m, dsub, ncent = ct.shape
    for p in range(m):
        for c in range(ncent):
            tab[p, c] = np.float32(0.0)
        for d in range(dsub):
            xd = x[p * dsub + d]
            for c in range(ncent):
                tab[p, c] += xd * ct[p, d, c]


def _ip_luts_impl(xq, ct):
    nq = xq.shape[0]
    m, _, ncent = ct.shape
    out = np.empty((nq, m, ncent), dtype=np.float32)
    for q in prange(nq):
        _ip_tables(xq[q], ct, out[q])
    return out


_ip_luts = variant(_ip_luts_impl, "_ip_luts", parallel=True)
_ip_luts_serial = variant(_ip_luts_impl, "_ip_luts_serial")


def _check_ip_args(xq, centroids):
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    centroids = np.asarray(centroids, dtype=np.float32)
    m, ncent, dsub = centroids.shape if centroids.ndim == 3 else (0, 0, 0)
    if ncent != 16 or xq.ndim != 2 or xq.shape[1] != m * dsub:
        raise ValueError(f"need centroids (M, 16, dsub) and queries (nq, M·dsub), got {centroids.shape}, {xq.shape}")
    return xq, np.ascontiguousarray(centroids.transpose(0, 2, 1))


def ip_luts(xq: np.ndarray, centroids: np.ndarray, parallel: bool = True) -> np.ndarray:
    """Inner-product tables (nq, M, 16) float32 of queries (nq, M·dsub) against centroids (M, 16, dsub)."""
    xq, ct = _check_ip_args(xq, centroids)
    return (_ip_luts if parallel else _ip_luts_serial)(xq, ct)


def _ip_luts_u8_impl(xq, ct, mpad, levels):
    nq = xq.shape[0]
    m = ct.shape[0]
    out = np.empty((nq, mpad, 16), dtype=np.uint8)
    scale = np.empty(nq, dtype=np.float32)
    offset = np.empty(nq, dtype=np.float32)
    for q in prange(nq):
        tab = np.empty((m, 16), dtype=np.float32)
        mins = np.empty(m, dtype=np.float32)
        _ip_tables(xq[q], ct, tab)
        scale[q], offset[q] = _quantize_one(tab, out[q], mins, levels)
    return out, scale, offset


_ip_luts_u8 = variant(_ip_luts_u8_impl, "_ip_luts_u8", parallel=True, **_QFLAGS)
_ip_luts_u8_serial = variant(_ip_luts_u8_impl, "_ip_luts_u8_serial", **_QFLAGS)


def ip_luts_u8(xq: np.ndarray, centroids: np.ndarray, parallel: bool = True):
    """``quantize_luts(ip_luts(xq, centroids))`` in one pass (no float table array): the per-query search prologue."""
    xq, ct = _check_ip_args(xq, centroids)
    m = ct.shape[0]
    fn = _ip_luts_u8 if parallel else _ip_luts_u8_serial
    return fn(xq, ct, m + (m & 1), _levels(m))


# ------------------------------------------------------------------- SIMD block kernels
_I1 = ir.IntType(1)
_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


def _const_vec(ty, values):
    return ir.Constant(ir.VectorType(ty, len(values)), [ir.Constant(ty, v) for v in values])


_KERNELS: dict = {}


def _make_kernel(kind: str, qb: int):
    """One shared :func:`_new_kernel` per (kind, qb)."""
    if (kind, qb) not in _KERNELS:
        _KERNELS[kind, qb] = _new_kernel(kind, qb)
    return _KERNELS[kind, qb]


def _new_kernel(kind: str, qb: int):
    """An ``@intrinsic`` scoring one block (or two for ``"avx512"``) for ``qb`` queries.

    ``kind``: ``"avx2"`` (pshufb layout, 32 rows), ``"avx512"`` (pshufb layout, 64 rows: blocks at
    ``code_off`` and ``code_off2``) or ``"vbmi"`` (vbmi layout, 32 rows).  Call:
    ``kern(lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, minsum, sums, masks)`` with
    byte offsets into the flat uint8 data of ``lut`` (tables as laid out by :func:`_expand_luts`, query
    ``t`` at ``lut_off + t·lut_stride``) and ``codes``; ``nsteps`` = ``blocks.shape[1]``.  Writes
    ``sums[t, :width]`` (uint16 (qb, 64), rows in order) and ``masks[t]`` (int64, bit r set iff
    ``sums[t, r] >= minsum[t]``, minsum in [0, 65535]).
    """
    width = 64 if kind == "avx512" else 32
    vbytes = ir.VectorType(_I8, 64 if kind == "vbmi" else width)
    if kind == "vbmi":
        acc_ty = ir.VectorType(_I32, 16)
    else:
        acc_ty = ir.VectorType(_I16, width // 2)

    @intrinsic
    def kern(typingctx, lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, minsum, sums, masks):
        sig = types.void(lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, minsum, sums, masks)

        def codegen(context, builder, signature, args):
            a = signature.args
            lut_off_v, lut_stride_v, coff, coff2, nsteps_v = (
                context.cast(builder, args[t], a[t], types.int64) for t in (1, 2, 4, 5, 6))
            ptr = {t: context.make_array(a[t])(context, builder, args[t]).data for t in (0, 3, 7, 8, 9)}
            lut_p, code_p, min_p, sums_p, mask_p = (ptr[t] for t in (0, 3, 7, 8, 9))
            module = builder.module

            def declare(name, ret, argtys):
                return module.globals.get(name) or ir.Function(module, ir.FunctionType(ret, argtys), name)

            def load(base, off, ty):
                p = builder.gep(base, [off], inbounds=True)
                return builder.load(builder.bitcast(p, ty.as_pointer()), align=1)

            def const(v):
                return ir.Constant(_I64, v)

            qbase = [builder.add(lut_off_v, builder.mul(lut_stride_v, const(t))) for t in range(qb)]
            nib = _const_vec(_I8, [15] * vbytes.count)
            four = _const_vec(_I16, [4] * (vbytes.count // 2))

            def high_nibbles(c):
                w = builder.bitcast(c, ir.VectorType(_I16, vbytes.count // 2))
                return builder.and_(builder.bitcast(builder.lshr(w, four), vbytes), nib)

            if kind == "vbmi":
                permb = declare("llvm.x86.avx512.permvar.qi.512", vbytes, [vbytes, vbytes])
                dpbusd = declare("llvm.x86.avx512.vpdpbusd.512", acc_ty, [acc_ty, acc_ty, acc_ty])
                sel = _const_vec(_I8, [(i % 4) << 4 for i in range(64)])  # table = byte position in dword
                ones = builder.bitcast(_const_vec(_I8, [1] * 64), acc_ty)

                def step(j, accs):
                    """Chunk ``j`` (sub-quantisers 8j..8j+7) of rows 0-15 / 16-31 into accs[2t], accs[2t+1]."""
                    cj = builder.mul(j, const(128))
                    idx = []
                    for v in range(2):
                        c = load(code_p, builder.add(coff, builder.add(cj, const(64 * v))), vbytes)
                        idx.append((builder.or_(builder.and_(c, nib), sel), builder.or_(high_nibbles(c), sel)))
                    out = list(accs)
                    for t in range(qb):
                        tb = builder.add(qbase[t], cj)
                        tabs = (load(lut_p, tb, vbytes), load(lut_p, builder.add(tb, const(64)), vbytes))
                        for v in range(2):
                            for h in range(2):
                                r = builder.bitcast(builder.call(permb, [tabs[h], idx[v][h]]), acc_ty)
                                out[2 * t + v] = builder.call(dpbusd, [out[2 * t + v], r, ones])
                    return out
            else:
                name = "llvm.x86.avx2.pshuf.b" if width == 32 else "llvm.x86.avx512.pshuf.b.512"
                pshufb = declare(name, vbytes, [vbytes, vbytes])
                eight = _const_vec(_I16, [8] * (width // 2))

                def step(j, accs):
                    """Code byte ``j`` (sub-quantisers 2j, 2j + 1) into (F, H) = accs[2t], accs[2t + 1]."""
                    cj = builder.mul(j, const(32))
                    if width == 32:
                        c = load(code_p, builder.add(coff, cj), vbytes)
                    else:
                        half = ir.VectorType(_I8, 32)
                        c = builder.shuffle_vector(load(code_p, builder.add(coff, cj), half),
                                                   load(code_p, builder.add(coff2, cj), half),
                                                   _const_vec(_I32, list(range(64))))
                    lo = builder.and_(c, nib)
                    hi = high_nibbles(c)
                    out = list(accs)
                    for t in range(qb):
                        tb = builder.add(qbase[t], builder.mul(j, const(128)))  # 2 broadcast tables of 64 B
                        r0 = builder.bitcast(builder.call(pshufb, [load(lut_p, tb, vbytes), lo]), acc_ty)
                        r1 = builder.bitcast(builder.call(pshufb, [load(lut_p, builder.add(tb, const(64)), vbytes),
                                                                   hi]), acc_ty)
                        out[2 * t] = builder.add(accs[2 * t], builder.add(r0, r1))
                        out[2 * t + 1] = builder.add(accs[2 * t + 1], builder.add(builder.lshr(r0, eight),
                                                                                  builder.lshr(r1, eight)))
                    return out

            # for (j = 0; j < nsteps; j++) accs = step(j, accs)
            entry = builder.block
            head = builder.append_basic_block("fs.head")
            body = builder.append_basic_block("fs.body")
            done = builder.append_basic_block("fs.done")
            builder.branch(head)
            builder.position_at_end(head)
            j = builder.phi(_I64)
            accs = [builder.phi(acc_ty) for _ in range(2 * qb)]
            zero = ir.Constant(acc_ty, None)
            j.add_incoming(const(0), entry)
            for ph in accs:
                ph.add_incoming(zero, entry)
            builder.cbranch(builder.icmp_signed("<", j, nsteps_v), body, done)
            builder.position_at_end(body)
            new = step(j, accs)
            j.add_incoming(builder.add(j, const(1)), builder.block)
            for ph, v in zip(accs, new):
                ph.add_incoming(v, builder.block)
            builder.branch(head)

            builder.position_at_end(done)
            for t in range(qb):
                if kind == "vbmi":
                    s32 = builder.shuffle_vector(accs[2 * t], accs[2 * t + 1], _const_vec(_I32, list(range(32))))
                    s16 = builder.trunc(s32, ir.VectorType(_I16, 32))
                    thr = builder.trunc(builder.load(builder.gep(min_p, [const(t)], inbounds=True)), _I32)
                    cmp_v, cmp_ty = s32, _I32
                else:
                    f, h = accs[2 * t], accs[2 * t + 1]
                    low = builder.sub(f, builder.shl(h, eight))
                    if width == 32:  # rows 0-15 are the low bytes, 16-31 the high bytes
                        order = list(range(32))
                    else:  # word lanes 0-15 come from the first block, 16-31 from the second
                        order = list(range(16)) + list(range(32, 48)) + list(range(16, 32)) + list(range(48, 64))
                    s16 = builder.shuffle_vector(low, h, _const_vec(_I32, order))
                    thr = builder.trunc(builder.load(builder.gep(min_p, [const(t)], inbounds=True)), _I16)
                    cmp_v, cmp_ty = s16, _I16
                sp = builder.gep(sums_p, [const(64 * t)], inbounds=True)
                builder.store(s16, builder.bitcast(sp, s16.type.as_pointer()), align=2)
                vt = ir.VectorType(cmp_ty, width)
                splat = builder.shuffle_vector(builder.insert_element(ir.Constant(vt, None), thr, ir.Constant(_I32, 0)),
                                               ir.Constant(vt, None), _const_vec(_I32, [0] * width))
                bits = builder.bitcast(builder.icmp_unsigned(">=", cmp_v, splat), ir.IntType(width))
                builder.store(builder.zext(bits, _I64) if width < 64 else bits,
                              builder.gep(mask_p, [const(t)], inbounds=True))
            return context.get_dummy_value()

        return sig, codegen

    return kern


@intrinsic
def _cttz(typingctx, x):
    """Index of the lowest set bit of a non-zero int64."""
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(_I1, 1))

    return sig, codegen


@intrinsic
def _misalign(typingctx, arr):
    """Address of ``arr``'s data modulo 64 (to put the kernel tables on cache-line boundaries)."""
    sig = types.int64(arr)

    def codegen(context, builder, signature, args):
        ptr = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.and_(builder.ptrtoint(ptr, _I64), ir.Constant(_I64, 63))

    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def _expand_luts(lut_u8, q0, qb, nsteps, vbmi, scratch):
    """Lay the tables of queries q0..q0+qb-1 out for the kernels in ``scratch`` (64-aligned, 128 B per step).

    pshufb: per code byte j, tables 2j and 2j + 1 each repeated in 4 lanes (64 B).  vbmi: per chunk j,
    tables 8j + {0, 2, 4, 6} then 8j + {1, 3, 5, 7} (16 B each).  Missing tables are zero.
    Returns (byte offset of query q0, byte stride between queries).
    """
    mp = lut_u8.shape[1]
    base = (64 - _misalign(scratch)) & 63
    stride = nsteps * 128
    src = lut_u8[q0:q0 + qb].reshape(-1).view(np.uint64)
    dst = scratch.view(np.uint64)
    for t in range(qb):
        o = (base + t * stride) // 8
        for j in range(nsteps):
            for h in range(2):
                for i in range(4):
                    p = 8 * j + 2 * i + h if vbmi else 2 * j + h
                    lo = np.uint64(0)
                    hi = np.uint64(0)
                    if p < mp:
                        lo = src[2 * (t * mp + p)]
                        hi = src[2 * (t * mp + p) + 1]
                    d = o + 16 * j + 8 * h + 2 * i
                    dst[d] = lo
                    dst[d + 1] = hi
    return base, stride


@njit(cache=True, nogil=True, inline="always")
def _scalar_pshufb(width, lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, minsum, sums, masks):
    lf = lut.reshape(-1)
    cf = codes.reshape(-1)
    for t in range(minsum.shape[0]):
        base = lut_off + t * lut_stride
        m = np.int64(0)
        for half in range(width // 32):
            cb = code_off if half == 0 else code_off2
            for pos in range(32):
                s = 0
                for j in range(nsteps):
                    c = cf[cb + 32 * j + pos]
                    s += lf[base + 128 * j + (c & 15)] + lf[base + 128 * j + 64 + (c >> 4)]
                r = 32 * half + 16 * (pos & 1) + (pos >> 1)
                sums[t, r] = s
                if s >= minsum[t]:
                    m |= np.int64(1) << r
        masks[t] = m


@njit(cache=True, nogil=True)
def _scalar_avx2(lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, minsum, sums, masks):
    """Pure-numba twin of the ``"avx2"`` kernel (same arguments, same outputs)."""
    _scalar_pshufb(32, lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, minsum, sums, masks)


@njit(cache=True, nogil=True)
def _scalar_avx512(lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, minsum, sums, masks):
    """Pure-numba twin of the ``"avx512"`` kernel (same arguments, same outputs)."""
    _scalar_pshufb(64, lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, minsum, sums, masks)


@njit(cache=True, nogil=True)
def _scalar_vbmi(lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, minsum, sums, masks):
    """Pure-numba twin of the ``"vbmi"`` kernel (same arguments, same outputs)."""
    lf = lut.reshape(-1)
    cf = codes.reshape(-1)
    for t in range(minsum.shape[0]):
        base = lut_off + t * lut_stride
        m = np.int64(0)
        for r in range(32):
            s = 0
            for j in range(nsteps):
                for i in range(4):
                    c = cf[code_off + 128 * j + 4 * r + i]
                    s += lf[base + 128 * j + 16 * i + (c & 15)] + lf[base + 128 * j + 64 + 16 * i + (c >> 4)]
            sums[t, r] = s
            if s >= minsum[t]:
                m |= np.int64(1) << r
        masks[t] = m


# ------------------------------------------------------------------------- fused top-k scan
# Names the scan bodies below call.  Each compiled entry point gets its own copy of the body with these
# rebound by :func:`_bind` (SIMD intrinsics or scalar twins); the module-level values are the scalar ones.
_WIDE = False
_QB_PSHUFB = _QB_AVX2
_K32_1 = _K32_Q = _scalar_avx2
_K64_1 = _K64_Q = _scalar_avx512
_KV_1 = _KV_Q = _scalar_vbmi
_SCAN_GROUP = None

@njit(cache=True, nogil=True, inline="always")
def _min_sum(root, c, scale):
    """Smallest integer sum that may still beat heap root ``root`` (a safe lower bound, in [0, 65535]).

    A row with S ≤ (root − c)/Δ − 1 has score ≤ root even after float32 rounding.
    """
    if not (root > -np.inf) or not (scale > 0):
        return np.int64(0)
    x = math.floor((np.float64(root) - np.float64(c)) / np.float64(scale)) - 1.0
    if x <= 0.0:
        return np.int64(0)
    if x >= 65535.0:
        return np.int64(65535)
    return np.int64(x)


@njit(cache=True, nogil=True, inline="always")
def _min_sum_affine(root, off, bias, amax, bmin, bmax, scale):
    """:func:`_min_sum` for affine scores ``s = (Δ·S + off)·b_i + a_i + bias`` over rows with ``a_i ≤ amax``
    and ``0 ≤ bmin ≤ b_i ≤ bmax``: a row can beat ``root`` only if ``u = Δ·S + off`` exceeds
    ``t/bmax`` (``t = root − bias − amax ≥ 0``) or ``t/bmin`` (``t < 0``)."""
    if not (root > -np.inf) or not (bmin >= 0):
        return np.int64(0)
    t = np.float64(root) - np.float64(bias) - np.float64(amax)
    if t >= 0.0:
        if not (bmax > 0):
            return np.int64(65535)
        return _min_sum(t / np.float64(bmax), off, scale)
    if not (bmin > 0):
        return np.int64(0)
    return _min_sum(t / np.float64(bmin), off, scale)


def term_bounds(row_a: np.ndarray, row_b: np.ndarray, n: int, row_e: np.ndarray | None = None) -> np.ndarray:
    """Per 32-row block (max a, min b, max b, max e) of the row terms → float32 (ceil(n / 32), 4), the
    ``bounds`` argument of the scans (empty ``row_a``/``row_b``/``row_e`` mean 0 / 1 / 0; padding rows do not
    count)."""
    nblocks = (n + BLOCK - 1) // BLOCK
    out = np.empty((nblocks, 4), dtype=np.float32)
    row_e = np.zeros(0, np.float32) if row_e is None else row_e
    for col, terms, fill, reduce in ((0, row_a, -np.inf, np.max), (1, row_b, np.inf, np.min),
                                     (2, row_b, -np.inf, np.max), (3, row_e, -np.inf, np.max)):
        if terms.shape[0] == 0:
            out[:, col] = 1.0 if col in (1, 2) else 0.0
            continue
        padded = np.full(nblocks * BLOCK, fill, dtype=np.float32)
        padded[:n] = terms[:n]
        out[:, col] = reduce(padded.reshape(nblocks, BLOCK), axis=1)
    return out


@njit(cache=True, nogil=True, inline="always")
def _range_bounds(bounds, row_a, row_b, row_e, start, stop):
    """(max a, min b, max b, max e) over rows [start, stop): from the per-block ``bounds`` when given (a
    superset of the rows, so still valid), else from the rows themselves."""
    if bounds.shape[0] > 0:
        b0 = start // BLOCK
        amax = bounds[b0, 0]
        bmin = bounds[b0, 1]
        bmax = bounds[b0, 2]
        emax = bounds[b0, 3]
        for b in range(b0 + 1, (stop + BLOCK - 1) // BLOCK):
            amax = max(amax, bounds[b, 0])
            bmin = min(bmin, bounds[b, 1])
            bmax = max(bmax, bounds[b, 2])
            emax = max(emax, bounds[b, 3])
        return amax, bmin, bmax, emax
    amax = np.float32(0.0)
    bmin = bmax = np.float32(1.0)
    emax = np.float32(0.0)
    if row_e.shape[0] > 0:
        emax = row_e[start]
        for i in range(start + 1, stop):
            emax = max(emax, row_e[i])
    if row_a.shape[0] > 0:
        amax = row_a[start]
        for i in range(start + 1, stop):
            amax = max(amax, row_a[i])
    if row_b.shape[0] > 0:
        bmin = bmax = row_b[start]
        for i in range(start + 1, stop):
            bmin = min(bmin, row_b[i])
            bmax = max(bmax, row_b[i])
    return amax, bmin, bmax, emax


@njit(cache=True, nogil=True, inline="always")
def _threshold(root, off, bias, scale, affine, amax, bmin, bmax, confident, cand_floor, qwidth, emax, q):
    """Integer sum below which a row of the current range cannot matter to query ``q`` (heap root ``root``).

    Plain scores: it cannot beat the root.  Affine scores: the same for every row within the range's bounds.
    Confidence scan: it can neither enter the heap of lower bounds (``s − w > root``, so ``s > root``) nor be
    buffered (``s + w ≥ root`` and ``s ≥`` the query's floor).
    """
    if not affine:
        return _min_sum(root, off + bias, scale)
    t_heap = _min_sum_affine(root, off, bias, amax, bmin, bmax, scale)
    if not confident:
        return t_heap
    t_conf = _min_sum_affine(root, off, bias, amax + qwidth[q] * emax, bmin, bmax, scale)
    t_floor = _min_sum_affine(cand_floor[q], off, bias, amax, bmin, bmax, scale)
    return max(t_conf, min(t_floor, t_heap))


@njit(cache=True, nogil=True, inline="always")
def _check_shapes(lut_u8, blocks, n):
    vbmi = blocks.ndim == 4
    per_step = 8 if vbmi else 2
    if lut_u8.shape[1] > per_step * blocks.shape[1] or lut_u8.shape[1] <= per_step * (blocks.shape[1] - 1):
        raise ValueError("fast-scan: lut_u8 has a different number of sub-quantisers than the packed codes")
    if n > blocks.shape[0] * 32 or n < 0:
        raise ValueError("fast-scan: n exceeds the packed rows")


def _scan_group_impl(lut_u8, scale, offset, bias, blocks, n, ranges, live, row_a, row_b, bounds, row_e, qwidth,
                     vals, rows, cand_s, cand_i, cand_n, cand_floor, q0, qn):
    """Scan queries q0..q0+qn-1 into their heaps ``vals[q]``/``rows[q]``.

    Queries go in groups of ``QB`` (one kernel call scores a block for the whole group) when the group's
    ranges agree, else one by one; rows are visited in tiles of about 256 KiB of codes, each tile by every
    group in turn, so a tile is read from memory once and then from L2.
    """
    vbmi = blocks.ndim == 4
    group = _QB_VBMI if vbmi else _QB_PSHUFB
    nsteps = blocks.shape[1]
    bstride = 1
    for d in blocks.shape[1:]:
        bstride *= d
    nblocks = blocks.shape[0]
    nr = ranges.shape[1]
    has_a = row_a.shape[0] > 0
    has_b = row_b.shape[0] > 0
    confident = row_e.shape[0] > 0
    affine = has_a or has_b or confident
    has_live = live.shape[0] > 0
    # units of queries scanned together: (first query, count)
    unit_q = np.empty(qn, dtype=np.int64)
    unit_n = np.empty(qn, dtype=np.int64)
    nunits = 0
    for g0 in range(q0, q0 + qn, group):
        gn = min(group, q0 + qn - g0)
        shared = gn == group
        for t in range(1, gn):
            for r in range(nr):
                if ranges[g0 + t, r, 0] != ranges[g0, r, 0] or ranges[g0 + t, r, 1] != ranges[g0, r, 1]:
                    shared = False
        if shared:
            unit_q[nunits] = g0
            unit_n[nunits] = gn
            nunits += 1
        else:
            for t in range(gn):
                unit_q[nunits] = g0 + t
                unit_n[nunits] = 1
                nunits += 1
    sums = np.empty((group, 64), dtype=np.uint16)
    masks = np.empty(group, dtype=np.int64)
    minsum = np.zeros(group, dtype=np.int64)
    scratch = np.empty(qn * nsteps * 128 + 64, dtype=np.uint8)
    tbase, tstride = _expand_luts(lut_u8, q0, qn, nsteps, vbmi, scratch)
    tile = max(2, (_TILE_BYTES // bstride) // 2 * 2)  # blocks per tile, even (the 64-row kernel pairs blocks)
    if nunits == qn:  # no query groups share a code load: one pass per query in range order
        tile = nblocks + 1
    amax = emax = np.float32(0.0)  # row-term bounds of the current range (affine scores only)
    bmin = bmax = np.float32(1.0)
    for tile0 in range(0, nblocks, tile):
        tile_lo = tile0 * 32
        tile_hi = min(tile0 + tile, nblocks) * 32
        for u in range(nunits):
            qs = unit_q[u]
            qb = unit_n[u]
            lut_off = tbase + (qs - q0) * tstride
            for r in range(nr):
                start = max(ranges[qs, r, 0], 0, tile_lo)
                stop = min(ranges[qs, r, 1], n, tile_hi)
                if start >= stop:
                    continue
                if affine:  # bounds of the row terms over the range's blocks, for a safe integer threshold
                    amax, bmin, bmax, emax = _range_bounds(bounds, row_a, row_b, row_e, start, stop)
                for t in range(qb):
                    q = qs + t
                    minsum[t] = _threshold(vals[q, 0], offset[q], bias[q, r], scale[q], affine, amax, bmin, bmax,
                                           confident, cand_floor, qwidth, emax, q)
                b = start // 32
                bend = (stop + 31) // 32
                while b < bend:
                    width = 64 if (not vbmi and _WIDE and b + 1 < bend) else 32
                    off0 = b * bstride
                    if vbmi:
                        if qb == 1:
                            _KV_1(scratch, lut_off, tstride, blocks, off0, 0, nsteps, minsum, sums, masks)
                        else:
                            _KV_Q(scratch, lut_off, tstride, blocks, off0, 0, nsteps, minsum, sums, masks)
                    elif width == 64:
                        if qb == 1:
                            _K64_1(scratch, lut_off, tstride, blocks, off0, off0 + bstride, nsteps, minsum, sums,
                                   masks)
                        else:
                            _K64_Q(scratch, lut_off, tstride, blocks, off0, off0 + bstride, nsteps, minsum, sums,
                                   masks)
                    else:
                        if qb == 1:
                            _K32_1(scratch, lut_off, tstride, blocks, off0, 0, nsteps, minsum, sums, masks)
                        else:
                            _K32_Q(scratch, lut_off, tstride, blocks, off0, 0, nsteps, minsum, sums, masks)
                    row0 = b * 32
                    lo = max(start - row0, 0)
                    hi = min(stop - row0, width)
                    rmask = np.int64(-1) if hi == 64 else (np.int64(1) << hi) - 1
                    rmask &= ~((np.int64(1) << lo) - 1)
                    for t in range(qb):
                        m = masks[t] & rmask
                        if m == 0:
                            continue
                        q = qs + t
                        sc = scale[q]
                        off = offset[q]
                        bq = bias[q, r]
                        hv = vals[q]
                        hr = rows[q]
                        pushed = False
                        while m != 0:
                            pos = _cttz(m)
                            m &= m - 1
                            i = row0 + pos
                            if has_live and not live[i]:
                                continue
                            s = sc * np.float32(sums[t, pos]) + off
                            if has_b:
                                s *= row_b[i]
                            if has_a:
                                s += row_a[i]
                            s += bq
                            if confident:
                                w = qwidth[q] * row_e[i]
                                if s - w > hv[0]:
                                    heap_replace_root(hv, hr, s - w, i)
                                    pushed = True
                                if s + w >= hv[0] and s >= cand_floor[q]:
                                    c = cand_n[q]
                                    if c == cand_s.shape[1]:
                                        c, cand_floor[q] = _prune_candidates(cand_s[q], cand_i[q], c, hv[0], qwidth[q],
                                                                             row_e, cand_s.shape[1] // 2, cand_floor[q])
                                        pushed = True  # the floor may have risen: refresh the threshold
                                    cand_s[q, c] = s
                                    cand_i[q, c] = i
                                    cand_n[q] = c + 1
                            elif s > hv[0]:
                                heap_replace_root(hv, hr, s, i)
                                pushed = True
                        if pushed:
                            minsum[t] = _threshold(hv[0], off, bq, sc, affine, amax, bmin, bmax, confident,
                                                   cand_floor, qwidth, emax, q)
                    b += width // 32
    for q in range(q0, q0 + qn):
        heap_to_sorted(vals[q], rows[q])


def _scan_impl(lut_u8, scale, offset, bias, blocks, n, ranges, live, row_a, row_b, bounds, k):
    """Best ``k`` rows per query by fast-scan score → (scores (nq, k) desc, rows (nq, k), -1 = none)."""
    _check_shapes(lut_u8, blocks, n)
    if k < 1:
        raise ValueError("fast-scan: k must be >= 1")
    nq = lut_u8.shape[0]
    group = (_QB_VBMI if blocks.ndim == 4 else _QB_PSHUFB) * _GROUPS_PER_TILE
    vals = np.full((nq, k), -np.inf, dtype=np.float32)
    rows = np.full((nq, k), -1, dtype=np.int64)
    no_e = np.zeros(0, dtype=np.float32)
    no_s = np.zeros((0, 0), dtype=np.float32)
    no_i = np.zeros((0, 0), dtype=np.int64)
    no_n = np.zeros(0, dtype=np.int64)
    for g in prange((nq + group - 1) // group):
        q0 = g * group
        _SCAN_GROUP(lut_u8, scale, offset, bias, blocks, n, ranges, live, row_a, row_b, bounds, no_e, no_e, vals, rows,
                    no_s, no_i, no_n, no_e, q0, min(group, nq - q0))
    return vals, rows


@njit(cache=True, nogil=True)
def _prune_candidates(cs, ci, c, root, qwidth, row_e, keep, floor):
    """Drop buffered candidates whose upper bound fell below ``root``; of the rest keep the ``keep`` best
    by score.  Returns (count, floor): the floor is the smallest kept score once ``keep`` were kept (rows
    below it can no longer be among the ``keep`` best), else unchanged.  Order is not kept."""
    kept = 0
    for j in range(c):
        if cs[j] + qwidth * row_e[ci[j]] >= root:
            cs[kept] = cs[j]
            ci[kept] = ci[j]
            kept += 1
    if kept > keep:
        top = top_k_unordered(cs[:kept], keep)
        top_s = cs[top]
        top_i = ci[top]
        cs[:keep] = top_s
        ci[:keep] = top_i
        floor = max(floor, top_s.min())
        kept = keep
    return kept, floor


def _confident_impl(lut_u8, scale, offset, bias, blocks, n, ranges, live, row_a, row_b, bounds, row_e, qwidth, k,
                    kk):
    """Rows that may be among the best ``k`` given a confidence interval ``± qwidth[q]·row_e[i]`` around each
    score, at most ``kk`` of them → (scores (nq, kk), rows (nq, kk)), unordered, padded with (−inf, −1).

    The scan keeps a top-``k`` heap of lower bounds ``s − w`` (exact: every row that could enter it is
    scored) and buffers rows whose upper bound ``s + w`` reaches the heap's smallest.  When the buffer
    (2·kk) fills, rows whose upper bound fell below are dropped and at most the ``kk`` best by score are
    kept; the smallest kept score becomes a floor under which rows are no longer buffered.  At the end
    the rows below the final k-th lower bound are dropped and at most the ``kk`` best by score returned:
    the rows of a top-``kk`` scan that pass the confidence test (up to rows shed by a floor whose better
    rows later fail the test), for a top-``k`` heap and appends instead of a top-``kk`` heap.
    """
    _check_shapes(lut_u8, blocks, n)
    if k < 1 or kk < k:
        raise ValueError("fast-scan: need 1 <= k <= kk")
    nq = lut_u8.shape[0]
    group = (_QB_VBMI if blocks.ndim == 4 else _QB_PSHUFB) * _GROUPS_PER_TILE
    vals = np.full((nq, k), -np.inf, dtype=np.float32)
    rows = np.full((nq, k), -1, dtype=np.int64)
    cap = 2 * kk
    cand_s = np.empty((nq, cap), dtype=np.float32)
    cand_i = np.empty((nq, cap), dtype=np.int64)
    cand_n = np.zeros(nq, dtype=np.int64)
    cand_floor = np.full(nq, -np.inf, dtype=np.float32)
    out_s = np.full((nq, kk), -np.inf, dtype=np.float32)
    out_i = np.full((nq, kk), -1, dtype=np.int64)
    for g in prange((nq + group - 1) // group):
        q0 = g * group
        qn = min(group, nq - q0)
        _SCAN_GROUP(lut_u8, scale, offset, bias, blocks, n, ranges, live, row_a, row_b, bounds, row_e, qwidth, vals,
                    rows, cand_s, cand_i, cand_n, cand_floor, q0, qn)
        for q in range(q0, q0 + qn):
            root = vals[q, k - 1]  # heap_to_sorted left the k-th largest lower bound last
            c, _ = _prune_candidates(cand_s[q], cand_i[q], cand_n[q], root, qwidth[q], row_e, kk, cand_floor[q])
            for t in range(c):
                out_s[q, t] = cand_s[q, t]
                out_i[q, t] = cand_i[q, t]
    return out_s, out_i


def _sums_impl(lut_u8, blocks, n):
    """Integer sums S[q, i] = Σ_p lut_u8[q, p, code_{i,p}] of every row → uint16 (nq, n) (tests, re-scoring)."""
    _check_shapes(lut_u8, blocks, n)
    vbmi = blocks.ndim == 4
    nq = lut_u8.shape[0]
    nsteps = blocks.shape[1]
    bstride = 1
    for d in blocks.shape[1:]:
        bstride *= d
    out = np.empty((nq, n), dtype=np.uint16)
    for q in prange(nq):
        sums = np.empty((1, 64), dtype=np.uint16)
        masks = np.empty(1, dtype=np.int64)
        minsum = np.zeros(1, dtype=np.int64)
        scratch = np.empty(nsteps * 128 + 64, dtype=np.uint8)
        tbase, tstride = _expand_luts(lut_u8, q, 1, nsteps, vbmi, scratch)
        for b in range((n + 31) // 32):
            if vbmi:
                _KV_1(scratch, tbase, tstride, blocks, b * bstride, 0, nsteps, minsum, sums, masks)
            else:
                _K32_1(scratch, tbase, tstride, blocks, b * bstride, 0, nsteps, minsum, sums, masks)
            for t in range(min(32, n - 32 * b)):
                out[q, 32 * b + t] = sums[0, t]
    return out


def _bind_globals(impl, glb: dict):
    fn = pytypes.FunctionType(impl.__code__, {**impl.__globals__, **glb}, impl.__name__, impl.__defaults__,
                              impl.__closure__)
    fn.__module__ = impl.__module__
    fn.__doc__ = impl.__doc__
    return fn


_GROUPS: dict = {}


def _bind(impl, name: str, simd: bool, wide: bool | None = None, **flags):
    """``variant`` of ``impl`` with its block kernels bound: SIMD intrinsics the target runs, else scalar twins.

    Each binding is a separate function with its own cache entry (numba caches per function name and
    target CPU, so the intrinsics are only compiled for CPUs that have them).  The per-group scan is
    one serial function per binding, shared by the parallel and serial entry points.
    """
    avx2 = simd and HAS_AVX2
    wide = simd and HAS_AVX512 and (True if wide is None else wide)
    vbmi = simd and HAS_VBMI
    qb_p = _QB_AVX512 if wide else _QB_AVX2
    glb = {
        "_WIDE": wide, "_QB_PSHUFB": qb_p, "_QB_VBMI": _QB_VBMI,
        "_K32_1": _make_kernel("avx2", 1) if avx2 else _scalar_avx2,
        "_K32_Q": _make_kernel("avx2", qb_p) if avx2 else _scalar_avx2,
        "_K64_1": _make_kernel("avx512", 1) if wide else _scalar_avx512,
        "_K64_Q": _make_kernel("avx512", qb_p) if wide else _scalar_avx512,
        "_KV_1": _make_kernel("vbmi", 1) if vbmi else _scalar_vbmi,
        "_KV_Q": _make_kernel("vbmi", _QB_VBMI) if vbmi else _scalar_vbmi,
    }
    key = (avx2, wide, vbmi)
    if key not in _GROUPS:
        tag = "_".join(t for t, on in zip(("avx2", "avx512", "vbmi"), key) if on) or "scalar"
        _GROUPS[key] = variant(_bind_globals(_scan_group_impl, glb), f"_fastscan_group_{tag}")
    glb["_SCAN_GROUP"] = _GROUPS[key]
    return variant(_bind_globals(impl, glb), name, **flags)


#: ``fastscan_topk(lut_u8, scale, offset, bias, blocks, n, ranges, live, row_a, row_b, bounds, k)`` → (scores, rows).
#: Parallel over query groups; SIMD kernels where the CPU has them.
fastscan_topk = _bind(_scan_impl, "fastscan_topk", True, parallel=True)
#: Serial twin of :data:`fastscan_topk` (small calls, single queries).
fastscan_topk_serial = _bind(_scan_impl, "fastscan_topk_serial", True)
#: Pure-numba scalar kernels, identical results (what runs on CPUs without the SIMD features).
fastscan_topk_fallback = _bind(_scan_impl, "fastscan_topk_fallback", False, parallel=True)
fastscan_topk_fallback_serial = _bind(_scan_impl, "fastscan_topk_fallback_serial", False)
#: ``fastscan_candidates(lut_u8, scale, offset, bias, blocks, n, ranges, live, row_a, row_b, bounds, row_e, qwidth,
#: k, kk)`` → (scores, rows) of the rows whose confidence interval reaches the top ``k`` (see
#: :func:`_confident_impl`).
fastscan_candidates = _bind(_confident_impl, "fastscan_candidates", True, parallel=True)
fastscan_candidates_serial = _bind(_confident_impl, "fastscan_candidates_serial", True)
fastscan_candidates_fallback = _bind(_confident_impl, "fastscan_candidates_fallback", False)
#: ``fastscan_sums(lut_u8, blocks, n)`` → uint16 (nq, n) integer sums of every row.
fastscan_sums = _bind(_sums_impl, "fastscan_sums", True, parallel=True)
fastscan_sums_fallback = _bind(_sums_impl, "fastscan_sums_fallback", False, parallel=True)
