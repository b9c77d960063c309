"""4-bit PQ fast-scan kernels against the numpy references: layouts, tables, exact integer sums, fused top-k,
the confidence scan, and every SIMD kernel set this host runs against the scalar twins."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import vqtest_reference as ref
from numba import njit
from vqsearch.kernels import fastscan as fs
from vqsearch.kernels.fastscan.block_kernels import expand_luts, score_pshufb32, score_pshufb64, score_vbmi

LAYOUTS = fs.LAYOUTS


def distinct_kernel_sets(layout: str) -> dict[str, fs.KernelSet]:
    """The kernel sets of this host that run different block kernels on ``layout``, widest first.

    Sets that differ only in kernels of the other layout run the same code (its scalar twin, or the same
    SIMD kernel) and would only cost another compilation: on an AVX2 host every set runs the vbmi layout
    as its scalar twin, so one of them covers it."""
    seen: dict[tuple, str] = {}
    for name, kernels in fs.available_kernel_sets().items():
        seen.setdefault(_code_for(kernels, layout), name)
    return {name: fs.available_kernel_sets()[name] for name in seen.values()}


def _code_for(kernels: fs.KernelSet, layout: str) -> tuple:
    """What decides the block kernels a set runs on ``layout``."""
    return (kernels.vbmi,) if layout == "vbmi" else (kernels.avx2, kernels.avx512)


def _variants(kernels: fs.KernelSet) -> tuple[bool, ...]:
    """Parallel and serial variants for the host's own kernel set; the serial one for the others (the
    parallel wrapper splits work the same way whatever block kernels it runs)."""
    return (True, False) if kernels == fs.NATIVE else (False,)


LAYOUT_KERNEL_SETS = [(layout, name) for layout in LAYOUTS for name in distinct_kernel_sets(layout)]
#: Kernel sets with SIMD kernels that this host runs (empty on CPUs without AVX2: nothing to compare).
SIMD_SETS = [s for name, s in fs.available_kernel_sets().items() if name != "scalar"]
needs_simd = pytest.mark.skipif(not SIMD_SETS, reason="this CPU runs no SIMD fast-scan kernel (scalar twins only)")


# ----------------------------------------------------------------------------- data
def _data(rng, n, m, nq):
    nbytes = (m + 1) // 2
    codes = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    if m % 2:
        codes[:, -1] &= 15  # the phantom sub-quantiser's nibble is zero in real codes
    lut = rng.standard_normal((nq, m, 16)).astype(np.float32)
    return codes, lut


def _full(nq: int, n: int) -> np.ndarray:
    r = np.zeros((nq, 1, 2), np.int64)
    r[:, 0, 1] = n
    return r


def _ranges_case(rng, nq, n):
    """Queries 0-7 share unaligned ranges (batched kernels), the rest get their own; some slots are empty."""
    ranges = np.zeros((nq, 4, 2), np.int64)
    shared = np.array([[3, 70], [70, 70], [101, 333], [400, n]])
    for q in range(nq):
        if q < 8:
            ranges[q] = shared
        else:
            cuts = np.sort(rng.choice(np.arange(1, n), size=3, replace=False))
            ranges[q] = [[0, cuts[0]], [cuts[0], cuts[0]], [cuts[1] + 1, cuts[2]], [cuts[2] + 5, n + 40]]
    return ranges


def _check_topk(vals, rows, base, ranges, bias, live, k):
    """Scores equal the reference top-k exactly; returned rows are valid, distinct and carry their score."""
    for q in range(vals.shape[0]):
        cand_rows, cand_scores = ref.range_rows_ref(base, ranges, bias, live, q)
        want = cand_scores[np.argsort(-cand_scores, kind="stable")[:k]]
        got = min(k, cand_rows.size)
        np.testing.assert_array_equal(vals[q, :got], want)
        assert np.all(rows[q, got:] == -1) and np.all(np.isneginf(vals[q, got:]))
        score_of = dict(zip(cand_rows.tolist(), cand_scores.tolist()))
        assert len(set(rows[q, :got].tolist())) == got
        for v, i in zip(vals[q, :got], rows[q, :got]):
            assert int(i) in score_of and np.float32(score_of[int(i)]) == v


# ----------------------------------------------------------------------------- layout
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n,nbytes", [(1, 1), (31, 3), (32, 4), (33, 48), (100, 7)])
def test_pack_matches_reference_and_roundtrips(layout, n, nbytes, rng):
    codes = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    packed = fs.pack_fastscan(codes, layout)
    assert packed.layout == layout and packed.n == n
    np.testing.assert_array_equal(packed.blocks, ref.fastscan_pack_ref(codes, layout))
    np.testing.assert_array_equal(fs.unpack_fastscan(packed, nbytes), codes)
    assert not fs.unpack_fastscan(packed, padding=True)[n:].any()  # padding rows are zero codes


def test_default_layout_is_the_hosts_fastest():
    assert fs.DEFAULT_LAYOUT == ("vbmi" if fs.HAS_VBMI else "pshufb")
    assert fs.pack_fastscan(np.zeros((3, 2), np.uint8)).layout == fs.DEFAULT_LAYOUT


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError, match="must be 2-D"):
        fs.pack_fastscan(np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="unknown fast-scan layout 'avx9'"):
        fs.pack_fastscan(np.zeros((5, 2), np.uint8), "avx9")


# ----------------------------------------------------------------------------- tables
@pytest.mark.parametrize("m", [1, 7, 96, 300])
def test_quantize_luts_matches_reference(m, rng):
    lut = rng.standard_normal((5, m, 16)).astype(np.float32) * rng.uniform(0.1, 10, (5, m, 1)).astype(np.float32)
    tables = fs.quantize_luts(lut)
    assert isinstance(tables, fs.QueryTables) and tables.lut_u8.dtype == np.uint8
    for got, want in zip(tables, ref.quantize_luts_ref(lut)):
        np.testing.assert_array_equal(got, want)
    assert tables.lut_u8.max() == fs.max_level(m)  # the widest table spans all levels
    for got, want in zip(fs.quantize_luts(lut, parallel=False), tables):
        np.testing.assert_array_equal(got, want)


def test_quantize_constant_tables():
    lut_u8, scale, offset = fs.quantize_luts(np.full((2, 3, 16), 0.5, np.float32))
    assert not lut_u8.any() and not scale.any()
    np.testing.assert_allclose(offset, 1.5)


def test_quantize_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"lut must be \(nq, M, 16\)"):
        fs.quantize_luts(np.zeros((2, 3, 8), np.float32))


def test_ip_luts(rng):
    m, dsub = 12, 3
    xq = rng.standard_normal((6, m * dsub)).astype(np.float32)
    cent = rng.standard_normal((m, 16, dsub)).astype(np.float32)
    lut = fs.ip_luts(xq, cent)
    np.testing.assert_allclose(lut, np.einsum("qpd,pcd->qpc", xq.reshape(6, m, dsub), cent), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fs.ip_luts(xq, cent, parallel=False), lut)
    for a, b in zip(fs.ip_luts_u8(xq, cent), fs.quantize_luts(lut)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="need centroids"):
        fs.ip_luts(xq[:, :-1], cent)


# ----------------------------------------------------------------------------- block kernels
def _harness(score):
    @njit
    def run(kernels, queries, lut, lut_off, lut_stride, codes, off0, off1, nsteps, min_sums, sums, masks):
        score(kernels, queries, lut, lut_off, lut_stride, codes, off0, off1, nsteps, min_sums, sums, masks)

    return run


BLOCK_KERNELS = {"pshufb32": _harness(score_pshufb32), "pshufb64": _harness(score_pshufb64),
                 "vbmi": _harness(score_vbmi)}


@needs_simd
@pytest.mark.parametrize("kernels", SIMD_SETS, ids=[s.name for s in SIMD_SETS])
@pytest.mark.parametrize("kind", ["pshufb32", "pshufb64", "vbmi"])
@pytest.mark.parametrize("one", [True, False], ids=["one_query", "query_group"])
def test_block_kernels_equal_scalar_twins_and_reference(kernels, kind, one, rng):
    """Each block kernel of a SIMD kernel set against the scalar set and the numpy sums: every row's sum and
    the bit mask of the rows reaching each query's minimum."""
    if {"pshufb32": not kernels.avx2, "pshufb64": not kernels.avx512, "vbmi": not kernels.vbmi}[kind]:
        pytest.skip(f"the {kernels.name} kernel set runs the {kind} block as its scalar twin")
    run = BLOCK_KERNELS[kind]
    queries = 1 if one else (8 if kernels.avx512 or kind == "vbmi" else 4)
    m, n = 41, 96
    codes, lut = _data(rng, n, m, queries)
    lut_u8 = fs.quantize_luts(lut).lut_u8
    blocks = fs.pack_fastscan(codes, "vbmi" if kind == "vbmi" else "pshufb").blocks
    nsteps = blocks.shape[1]
    scratch = np.zeros(queries * nsteps * 128 + 64, np.uint8)
    lut_off, lut_stride = expand_luts(lut_u8, 0, queries, nsteps, kind == "vbmi", scratch)
    block_bytes = blocks[0].size
    want_all = ref.fastscan_sums_ref(lut_u8, codes)
    min_sums = np.array([0, 65535, 1000, 1500, 2000, 2500, 3000, 3500][:queries], np.int64)
    width = 64 if kind == "pshufb64" else 32
    for b in (0, 1) if width == 64 else (0, 1, 2):
        outs = []
        for ks in (kernels, fs.SCALAR):
            sums = np.zeros((queries, 64), np.uint16)
            masks = np.zeros(queries, np.int64)
            run(ks, queries, scratch, lut_off, lut_stride, blocks, b * block_bytes, (b + 1) * block_bytes,
                       nsteps, min_sums, sums, masks)
            outs.append((sums, masks))
        (simd_sums, simd_masks), (twin_sums, twin_masks) = outs
        np.testing.assert_array_equal(simd_sums[:, :width], twin_sums[:, :width])
        np.testing.assert_array_equal(simd_masks, twin_masks)
        want = want_all[:, 32 * b:32 * b + width]
        np.testing.assert_array_equal(simd_sums[:, :want.shape[1]], want)
        bits = (want >= min_sums[:, None]).astype(np.uint64) << np.arange(want.shape[1], dtype=np.uint64)
        np.testing.assert_array_equal(simd_masks.view(np.uint64), bits.sum(axis=1, dtype=np.uint64))


# ----------------------------------------------------------------------------- integer sums
@pytest.mark.parametrize("layout,kernel_set", LAYOUT_KERNEL_SETS)
def test_sums_exact(layout, kernel_set, rng):
    codes, lut = _data(rng, 517, 13, 5)  # odd M, n not a multiple of 32
    lut_u8 = fs.quantize_luts(lut).lut_u8
    kernels = fs.available_kernel_sets()[kernel_set]
    got = fs.fastscan_sums(lut_u8, fs.pack_fastscan(codes, layout), kernels=kernels)
    np.testing.assert_array_equal(got, ref.fastscan_sums_ref(lut_u8, codes))
    np.testing.assert_array_equal(fs.fastscan_sums(lut_u8, fs.pack_fastscan(codes, layout), parallel=False,
                                                   kernels=kernels), got)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sums_near_uint16_limit(layout, rng):
    """M = 257 tables at the top level: sums up to 65535 stay exact (the uint16 wrap-around cancels)."""
    m = 257
    codes, _ = _data(rng, 70, m, 2)
    lut_u8 = np.full((2, m + 1, 16), fs.max_level(m), np.uint8)
    lut_u8[:, m] = 0
    lut_u8[1, :, 3] = 0
    got = fs.fastscan_sums(lut_u8, fs.pack_fastscan(codes, layout))
    np.testing.assert_array_equal(got, ref.fastscan_sums_ref(lut_u8, codes))
    assert got[0].min() == 65535


def test_bad_arguments_raise(rng):
    codes, lut = _data(rng, 40, 8, 2)
    tables = fs.quantize_luts(lut)
    packed = fs.pack_fastscan(codes, "vbmi")
    with pytest.raises(ValueError, match="0 tables do not match packed codes"):
        fs.fastscan_sums(tables.lut_u8[:, :0], packed)
    with pytest.raises(ValueError, match="105 rows do not fit the 2 packed blocks"):
        fs.fastscan_topk(tables, packed._replace(n=41 + 64), _full(2, 40), 3, parallel=False)
    with pytest.raises(ValueError, match="k must be >= 1"):
        fs.fastscan_topk(tables, packed, _full(2, 40), 0)
    with pytest.raises(ValueError, match=r"ranges must be \(nq=2, R, 2\)"):
        fs.fastscan_topk(tables, packed, _full(3, 40), 3)
    with pytest.raises(ValueError, match=r"bias must be \(nq, R\)"):
        fs.fastscan_topk(tables, packed, _full(2, 40), 3, bias=np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"live must have one entry per row \(40\)"):
        fs.fastscan_topk(tables, packed, _full(2, 40), 3, live=np.ones(39, bool))
    with pytest.raises(ValueError, match=r"terms.factor must have one entry per row"):
        fs.fastscan_topk(tables, packed, _full(2, 40), 3, terms=fs.RowTerms(factor=np.ones(3, np.float32)))
    with pytest.raises(ValueError, match="need 1 <= k <= keep"):
        fs.fastscan_candidates(tables, packed, _full(2, 40), 4, 3, np.ones(2, np.float32),
                               fs.RowTerms(error=np.ones(40, np.float32)))
    with pytest.raises(ValueError, match="needs terms.error"):
        fs.fastscan_candidates(tables, packed, _full(2, 40), 2, 3, np.ones(2, np.float32), fs.RowTerms())


# ----------------------------------------------------------------------------- fused top-k
def _scan_case(rng, layout, n, m, nq):
    """Random codes and tables of ``m`` sub-quantisers, packed, with the mixed ranges and random biases."""
    codes, lut = _data(rng, n, m, nq)
    tables = fs.quantize_luts(lut)
    ranges = _ranges_case(rng, nq, n)
    bias = rng.standard_normal((nq, ranges.shape[1])).astype(np.float32)
    return codes, tables, fs.pack_fastscan(codes, layout), ranges, bias


def test_term_bounds_match_reference(rng):
    n = 100
    shift, factor, error = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    for kwargs in ({}, {"shift": shift}, {"factor": factor, "error": error}, {"shift": shift, "factor": factor}):
        np.testing.assert_array_equal(fs.term_bounds(fs.RowTerms(**kwargs), n), ref.term_bounds_ref(n, **kwargs))
    with pytest.raises(ValueError, match="row terms have 99 entries for 100 rows"):
        fs.term_bounds(fs.RowTerms(shift=shift[:99]), n)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("affine", ["plain", "a_b_signed", "b_positive", "a_b_positive_bounds"])
def test_topk_matches_reference(layout, affine, rng):
    """Plain sums, then affine row terms: b of either sign (no integer threshold), b ≥ 0 (a threshold from
    the range's own rows), and b ≥ 0 with per-block bounds (:func:`term_bounds`); every kernel set with
    different code and the serial variant return the same arrays."""
    n, nq, k = 517, 11, 17
    codes, tables, packed, ranges, bias = _scan_case(rng, layout, n, 13, nq)
    live = rng.random(n) > 0.25
    terms = fs.RowTerms()
    if affine != "plain":
        terms = fs.RowTerms(shift=rng.standard_normal(n).astype(np.float32),
                            factor=rng.uniform(-0.5 if affine == "a_b_signed" else 0.2, 2, n).astype(np.float32))
    if affine.endswith("bounds"):
        terms = terms._replace(bounds=fs.term_bounds(terms, n))
    vals, rows = fs.fastscan_topk(tables, packed, ranges, k, bias=bias, live=live, terms=terms)
    assert vals.dtype == np.float32 and rows.dtype == np.int64 and vals.shape == rows.shape == (nq, k)
    base = ref.fastscan_scores_ref(*tables, codes, terms.shift, terms.factor)
    _check_topk(vals, rows, base, ranges, bias, live, k)
    assert not np.isin(rows[rows >= 0], np.flatnonzero(~live)).any()  # deleted rows never come back
    for kernels in distinct_kernel_sets(layout).values():
        for parallel in _variants(kernels):
            v2, r2 = fs.fastscan_topk(tables, packed, ranges, k, bias=bias, live=live, terms=terms, parallel=parallel,
                                      kernels=kernels)
            np.testing.assert_array_equal(v2, vals)
            np.testing.assert_array_equal(r2, rows)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("keep", [6, 30, 400])
def test_confident_candidates_match_reference(layout, keep, rng):
    """fastscan_candidates returns rows whose interval s ± w reaches the exact k-th largest lower bound over
    the query's live rows (R), at most ``keep`` of them, and among them every row of R that is also among
    the ``keep`` best scores overall (a floor only sheds rows that ``keep`` better ones beat); every kernel
    set and variant agrees."""
    n, nq, k = 700, 11, 4
    codes, tables, packed, ranges, bias = _scan_case(rng, layout, n, 14, nq)
    live = rng.random(n) > 0.2
    terms = fs.RowTerms(shift=rng.standard_normal(n).astype(np.float32),
                        factor=rng.uniform(0.3, 2, n).astype(np.float32),
                        error=rng.uniform(0, 1, n).astype(np.float32))
    width = rng.uniform(0, 2, nq).astype(np.float32)
    base = ref.fastscan_scores_ref(*tables, codes, terms.shift, terms.factor)
    results = []
    for bounded in (terms, terms._replace(bounds=fs.term_bounds(terms, n))):
        for kernels in distinct_kernel_sets(layout).values():
            for parallel in _variants(kernels):
                results.append(fs.fastscan_candidates(tables, packed, ranges, k, keep, width, bounded, bias=bias,
                                                      live=live, parallel=parallel, kernels=kernels))
    for vals, rows in results:
        np.testing.assert_array_equal(rows, results[0][1])
        assert vals.shape == rows.shape == (nq, keep)
        for q in range(nq):
            idx, sc = ref.range_rows_ref(base, ranges, bias, live, q)
            w = width[q] * terms.error[idx]
            root = np.sort(sc - w)[::-1][k - 1]
            in_r = set(idx[sc + w >= root].tolist())
            top_keep = set(idx[np.argsort(-sc, kind="stable")[:keep]].tolist())
            got = rows[q] >= 0
            returned = set(rows[q, got].tolist())
            assert len(returned) == got.sum() <= keep
            assert returned <= in_r
            assert (in_r & top_keep) <= returned
            score_of = dict(zip(idx.tolist(), sc.tolist()))
            np.testing.assert_allclose(vals[q, got], [score_of[i] for i in rows[q, got]], rtol=1e-6, atol=1e-6)
            assert np.isneginf(vals[q, ~got]).all()
            if keep >= len(idx):
                assert returned == in_r


#: (layout, kernel set) pairs where the set runs a SIMD kernel on the layout (not the scalar twin).
SIMD_LAYOUT_SETS = [(layout, s) for layout in LAYOUTS for s in SIMD_SETS
                    if _code_for(s, layout) != _code_for(fs.SCALAR, layout)]


@pytest.mark.skipif(not SIMD_LAYOUT_SETS, reason="this CPU runs no SIMD fast-scan kernel (scalar twins only)")
@pytest.mark.parametrize("layout,kernels", SIMD_LAYOUT_SETS, ids=[f"{lay}-{s.name}" for lay, s in SIMD_LAYOUT_SETS])
def test_simd_scan_equals_scalar_twins(layout, kernels, rng):
    """A flat batch (shared ranges: the grouped kernels) through a SIMD kernel set and the scalar twins, for
    every layout on which the set runs SIMD code."""
    n, m, nq, k = 300, 10, 10, 5
    codes, lut = _data(rng, n, m, nq)
    tables = fs.quantize_luts(lut)
    packed = fs.pack_fastscan(codes, layout)
    simd = fs.fastscan_topk(tables, packed, _full(nq, n), k, kernels=kernels)
    scalar = fs.fastscan_topk(tables, packed, _full(nq, n), k, kernels=fs.SCALAR)
    for a, b in zip(simd, scalar):
        np.testing.assert_array_equal(a, b)
    _check_topk(*simd, ref.fastscan_scores_ref(*tables, codes), _full(nq, n), np.zeros((nq, 1), np.float32), None, k)


def test_native_kernel_set_uses_every_simd_kernel_of_the_host():
    assert (fs.NATIVE.avx2, fs.NATIVE.avx512, fs.NATIVE.vbmi) == (fs.HAS_AVX2, fs.HAS_AVX512 and fs.HAS_AVX2,
                                                                  fs.HAS_VBMI)
    assert fs.HAS_SIMD_FASTSCAN == bool(SIMD_SETS)
    if not fs.HAS_AVX512:
        with pytest.raises(ValueError, match="cannot run the avx512 fast-scan kernel"):
            fs.KernelSet(avx2=fs.HAS_AVX2, avx512=True)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_k_larger_than_rows_pads(layout, rng):
    codes, lut = _data(rng, 40, 6, 3)
    tables = fs.quantize_luts(lut)
    live = np.zeros(40, bool)
    live[[2, 5, 33, 39]] = True
    ranges = np.array([[[0, 40]], [[3, 34]], [[7, 7]]], np.int64)
    vals, rows = fs.fastscan_topk(tables, fs.pack_fastscan(codes, layout), ranges, 6, live=live)
    assert sorted(rows[0, :4].tolist()) == [2, 5, 33, 39] and sorted(rows[1, :2].tolist()) == [5, 33]
    assert np.all(rows[0, 4:] == -1) and np.all(rows[1, 2:] == -1) and np.all(rows[2] == -1)
    assert np.all(np.isneginf(vals[0, 4:])) and np.all(np.isneginf(vals[2]))


def test_quantised_scores_close_to_float(rng):
    m, n, nq = 96, 300, 6
    codes, lut = _data(rng, n, m, nq)
    lut_u8, scale, offset = fs.quantize_luts(lut)
    sums = fs.fastscan_sums(lut_u8, fs.pack_fastscan(codes))
    approx = offset[:, None].astype(np.float64) + scale[:, None].astype(np.float64) * sums
    exact = ref.adc_scan_ref(lut, ref.unpack_nibbles(codes, m))
    bound = m * scale.astype(np.float64) / 2
    err = np.abs(approx - exact).max(axis=1)
    assert np.all(err <= bound + 1e-4), (err, bound)


def test_medium_flat_search(rng):
    """A flat search (all queries share one range) over 20k rows, M = 96: the batched kernels at scale."""
    n, m, nq, k = 20_011, 96, 20, 10
    codes, lut = _data(rng, n, m, nq)
    tables = fs.quantize_luts(lut)
    base = ref.fastscan_scores_ref(*tables, codes)
    for layout in LAYOUTS:
        vals, rows = fs.fastscan_topk(tables, fs.pack_fastscan(codes, layout), _full(nq, n), k)
        _check_topk(vals, rows, base, _full(nq, n), np.zeros((nq, 1), np.float32), None, k)


# ----------------------------------------------------------------------------- on-disk cache
def test_cached_kernels_load_in_a_new_process(tmp_path):
    """``cache=True`` works with the intrinsics and the kernel-set type: another process loads the stored
    machine code and agrees."""
    script = textwrap.dedent("""
        import numpy as np
        from vqsearch.kernels import fastscan as fs
        from vqsearch.kernels.fastscan import scans
        rng = np.random.default_rng(7)
        codes = rng.integers(0, 256, (300, 12), dtype=np.uint8)
        tables = fs.quantize_luts(rng.standard_normal((9, 24, 16)).astype(np.float32))
        ranges = np.zeros((9, 1, 2), np.int64)
        ranges[:, 0, 1] = 300
        vals, rows = fs.fastscan_topk(tables, fs.pack_fastscan(codes), ranges, 5, parallel=False)
        print(len(scans.compiled_entry(fs.fastscan_topk, parallel=False).stats.cache_hits), rows.tolist(),
              vals.tolist())
    """)
    here = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True,
                          cwd=tmp_path)
    there = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True,
                           cwd=tmp_path)
    assert there.stdout.split(" ", 1)[0] == "1"  # loaded from the cache the first run wrote (or found)
    assert here.stdout.split(" ", 1)[1] == there.stdout.split(" ", 1)[1]
