"""QTIP bitshift trellis: codes, Viterbi vs brute force, tail-biting, packing, decode, protocol.

(The protocol checks shared by every family are in test_quantizer_conformance.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
from vqsearch.kernels.trellis import decode_blocks, pack_states, unpack_states, viterbi_encode
from vqtest_blobs import read_blob, write_blob
from vqtest_data import ODD_DIMS

from vqsearch import errors, quantizers
from vqsearch.quantizers.trellis import (
    TrellisQuantizer,
    code_1mad,
    code_3inst,
    code_hyb,
    code_lut,
    tail_biting_viterbi,
)

# ----------------------------------------------------------------------------- references


def ref_windows(bits: np.ndarray, L: int, kv: int) -> np.ndarray:
    """States of circular bitstreams ``bits`` (..., nbits) of 0/1: the L-bit window (MSB-first) at bit t·kv."""
    nbits = bits.shape[-1]
    weights = 1 << np.arange(L - 1, -1, -1, dtype=np.int64)
    idx = (np.arange(0, nbits, kv)[:, None] + np.arange(L)[None, :]) % nbits  # (n, L)
    return bits[..., idx].astype(np.int64) @ weights


def all_streams(nbits: int) -> np.ndarray:
    """Every nbits-long bitstream as rows of 0/1 (MSB-first order of the integers 0 … 2^nbits − 1)."""
    return (np.arange(1 << nbits)[:, None] >> np.arange(nbits - 1, -1, -1)[None, :]) & 1


def ref_cost(x: np.ndarray, vals: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Σ_t ‖x_t − vals[:, s_t]‖² in float64 for state sequences (..., n)."""
    V = vals.shape[0]
    cost = np.zeros(states.shape[:-1])
    for t in range(states.shape[-1]):
        for v in range(V):
            cost += (float(x[t * V + v]) - vals[v, states[..., t]].astype(np.float64)) ** 2
    return cost


def brute_free(x: np.ndarray, vals: np.ndarray, L: int, kv: int) -> tuple[float, np.ndarray]:
    """Exhaustive minimum over all L + (n−1)·kv bit sequences (free start and end)."""
    n = x.shape[0] // vals.shape[0]
    nbits = L + (n - 1) * kv
    b = np.arange(1 << nbits, dtype=np.int64)
    states = np.stack([(b >> (nbits - L - t * kv)) & ((1 << L) - 1) for t in range(n)], axis=-1)
    cost = ref_cost(x, vals, states)
    i = int(np.argmin(cost))
    return float(cost[i]), states[i]


def brute_tailbiting(x: np.ndarray, vals: np.ndarray, L: int, kv: int,
                     overlap: int | None = None) -> tuple[float, np.ndarray]:
    """Exhaustive minimum over all circular n·kv-bit streams (optionally with a fixed overlap)."""
    n = x.shape[0] // vals.shape[0]
    states = ref_windows(all_streams(n * kv), L, kv)
    if overlap is not None:
        states = states[(states[:, 0] >> kv) == overlap]
    cost = ref_cost(x, vals, states)
    i = int(np.argmin(cost))
    return float(cost[i]), states[i]


def ref_decode_row(row: np.ndarray, vals: np.ndarray, L: int, kv: int, n: int, scale: float) -> np.ndarray:
    bits = np.unpackbits(row)[: n * kv]
    weights = 1 << np.arange(L - 1, -1, -1)
    states = [int(bits[(t * kv + np.arange(L)) % bits.size] @ weights) for t in range(n)]
    return (np.float32(scale) * vals[:, states]).T.reshape(-1)


def consistent(states: np.ndarray, L: int, kv: int) -> bool:
    """Bitshift overlap invariant, cyclically: low L−kv bits of s_t == high L−kv bits of s_{t+1}."""
    low = states & ((1 << (L - kv)) - 1)
    return bool(np.all(low == (np.roll(states, -1, axis=-1) >> kv)))


def run_viterbi(x: np.ndarray, vals: np.ndarray, L: int, kv: int, overlap) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    states = np.zeros((x.shape[0], x.shape[1] // vals.shape[0]), dtype=np.int32)
    ov = np.asarray(overlap, dtype=np.int64)
    costs = viterbi_encode(x, vals, L, kv, ov, ov, states, 2)
    return costs, states


# Trellises small enough to enumerate; kv covers the unrolled (P = 2, 4) and generic paths.
TINY = [  # (L, k, V, n steps)
    (6, 1, 1, 8),
    (6, 2, 1, 5),
    (7, 3, 1, 4),
    (8, 4, 1, 3),
    (6, 1, 2, 6),
    (9, 2, 2, 3),
    (7, 3, 2, 2),  # k·V = 6: 64 predecessors, the 8-row minimum pass run 8 times
]

# ----------------------------------------------------------------------------- codes


def test_computed_codes_match_reference_values():
    s = [0, 1, 12345, 65535]
    # quantizers.md §2.7, and s = 0 by hand: LCG 0x0491367A, bytes 122+54+145+4 = 325.
    np.testing.assert_allclose(code_1mad(16)[s], [-1.251687, -0.838969, 0.020298, 0.412718], atol=1e-6)
    assert code_1mad(16)[0] == np.float32((325 - 510) / 147.800537109375)
    np.testing.assert_allclose(code_3inst(16)[s], [0.768066, -0.919312, 1.086670, -0.158203], atol=1e-6)
    c = code_1mad(16).astype(np.float64)
    assert abs(c.mean()) < 2e-3 and abs(c.std() - 1.0001) < 1e-3
    assert abs(code_3inst(16).astype(np.float64).std() - 1.2437) < 1e-3


def test_lut_code_is_a_fixed_permutation_of_gaussian_quantiles():
    t = code_lut(10, 2)
    assert t.shape == (2, 1024)
    np.testing.assert_array_equal(np.sort(t[0]), np.sort(t[1]))
    assert not np.array_equal(t[0], t[1])
    np.testing.assert_array_equal(t, code_lut(10, 2))  # deterministic, no RNG state
    assert abs(float(np.sort(t[0])[512]) - 0.001224) < 1e-5  # Φ⁻¹(512.5 / 1024)


def test_hyb_code_structure():
    table = np.arange(1024, dtype=np.float32).reshape(512, 2) + 1
    c = code_hyb(16, table)
    s = np.arange(1 << 16, dtype=np.uint64)
    h = (s * (s + 1)) & 0xFFFFFFFF
    idx = ((h >> 6) & 511).astype(np.int64)
    np.testing.assert_array_equal(np.abs(c[0]), table[idx, 0])
    np.testing.assert_array_equal(c[1], table[idx, 1])
    np.testing.assert_array_equal(c[0] < 0, ((h >> 15) & 1).astype(bool))


# ----------------------------------------------------------------------------- Viterbi


@pytest.mark.parametrize("L,k,V,n", TINY)
def test_free_viterbi_equals_brute_force(L, k, V, n):
    r = np.random.default_rng(L * 100 + k * 10 + V)
    vals = r.standard_normal((V, 1 << L)).astype(np.float32)
    x = r.standard_normal((3, n * V)).astype(np.float32)
    costs, states = run_viterbi(x, vals, L, k * V, [-1, -1, -1])
    for i in range(3):
        c_ref, s_ref = brute_free(x[i], vals, L, k * V)
        np.testing.assert_array_equal(states[i], s_ref)
        np.testing.assert_allclose(costs[i], c_ref, rtol=1e-5)


@pytest.mark.parametrize("L,k,V,n", TINY)
def test_constrained_viterbi_equals_brute_force_tailbiting(L, k, V, n):
    kv = k * V
    r = np.random.default_rng(7 + L + k)
    vals = r.standard_normal((V, 1 << L)).astype(np.float32)
    x = r.standard_normal((4, n * V)).astype(np.float32)
    # Overlaps of random valid streams (n·kv >= L here, so every overlap is reachable).
    overlaps = ref_windows(r.integers(0, 2, size=(4, n * kv)), L, kv)[:, 0] >> kv
    costs, states = run_viterbi(x, vals, L, kv, overlaps)
    for i in range(4):
        c_ref, s_ref = brute_tailbiting(x[i], vals, L, kv, int(overlaps[i]))
        np.testing.assert_array_equal(states[i], s_ref)
        np.testing.assert_allclose(costs[i], c_ref, rtol=1e-5)
        assert consistent(states[i], L, kv)


def test_viterbi_with_different_start_and_end_constraints():
    L, kv, n = 7, 2, 5
    M = 1 << (L - kv)
    r = np.random.default_rng(21)
    vals = r.standard_normal((1, 1 << L)).astype(np.float32)
    x = r.standard_normal((4, n)).astype(np.float32)
    start = np.array([3, 0, 31, 17], dtype=np.int64)
    end = np.array([9, 31, 0, 17], dtype=np.int64)
    states = np.zeros((4, n), dtype=np.int32)
    costs = viterbi_encode(x, vals, L, kv, start, end, states, 2)
    nbits = L + (n - 1) * kv
    b = np.arange(1 << nbits, dtype=np.int64)
    every = np.stack([(b >> (nbits - L - t * kv)) & ((1 << L) - 1) for t in range(n)], axis=-1)
    for i in range(4):
        ok = every[((every[:, 0] >> kv) == start[i]) & ((every[:, -1] & (M - 1)) == end[i])]
        ref = ref_cost(x[i], vals, ok)
        np.testing.assert_array_equal(states[i], ok[int(np.argmin(ref))])
        np.testing.assert_allclose(costs[i], ref.min(), rtol=1e-5)


def test_refine_passes_never_increase_cost():
    L, kv = 10, 2
    r = np.random.default_rng(8)
    vals = r.standard_normal((1, 1 << L)).astype(np.float32)
    x = r.standard_normal((16, 64)).astype(np.float32)
    costs = []
    for window, refine in [(2, 0), (2, 1), (2, 2)]:
        states = tail_biting_viterbi(x, vals, L, kv, window, refine)
        assert consistent(states, L, kv)
        costs.append(ref_cost_rows(x, vals, states))
    assert np.all(costs[1] <= costs[0] * (1 + 1e-6)) and np.all(costs[2] <= costs[1] * (1 + 1e-6))
    assert costs[1].sum() < costs[0].sum(), "refinement of a 2-step pass 1 should help somewhere"


def ref_cost_rows(x: np.ndarray, vals: np.ndarray, states: np.ndarray) -> np.ndarray:
    return np.array([ref_cost(x[i], vals, states[i]) for i in range(x.shape[0])])


@pytest.mark.parametrize("window", [0, 1])
def test_two_pass_tailbiting_is_consistent_and_near_optimal(window):
    L, k, n = 6, 1, 10
    r = np.random.default_rng(3)
    vals = r.standard_normal((1, 1 << L)).astype(np.float32)
    x = r.standard_normal((6, n)).astype(np.float32)
    states = tail_biting_viterbi(x, vals, L, k, window)
    for i in range(6):
        assert consistent(states[i], L, k)
        c_opt, _ = brute_tailbiting(x[i], vals, L, k)
        c_got = float(ref_cost(x[i], vals, states[i]))
        c_same, _ = brute_tailbiting(x[i], vals, L, k, int(states[i, 0] >> k))
        assert c_opt <= c_got + 1e-6, "two-pass beat the exhaustive optimum: reference is wrong"
        assert c_got == pytest.approx(c_same, rel=1e-5), "pass 2 is not optimal for its own overlap"


# ----------------------------------------------------------------------------- bits


@pytest.mark.parametrize("L,kv,n", [(16, 2, 256), (16, 3, 64), (12, 1, 8), (16, 1, 8), (10, 8, 4), (6, 2, 4)])
def test_pack_unpack_round_trip_and_bit_layout(L, kv, n):
    r = np.random.default_rng(L + kv + n)
    nbits = n * kv
    streams = r.integers(0, 2, size=(5, nbits))
    states = np.ascontiguousarray(ref_windows(streams, L, kv), dtype=np.int32)
    assert consistent(states, L, kv)
    packed = np.empty((5, nbits // 8), dtype=np.uint8)
    pack_states(states, L, kv, packed)
    np.testing.assert_array_equal(packed, np.packbits(streams.astype(np.uint8), axis=1))
    back = np.empty_like(states)
    unpack_states(packed, L, kv, n, back)
    np.testing.assert_array_equal(back, states)


def test_decoder_fuzz_against_reference():
    r = np.random.default_rng(11)
    # kv = 4 takes the byte-window fast path (incl. one-byte streams, where both window bytes wrap)
    for L, kv, V, n in [(16, 2, 1, 256), (12, 3, 1, 32), (16, 4, 2, 8), (16, 1, 1, 8), (10, 2, 2, 12),
                        (12, 4, 1, 96), (20, 4, 1, 6), (8, 4, 1, 2), (12, 4, 2, 4), (4, 4, 1, 2)]:
        vals = r.standard_normal((V, 1 << L)).astype(np.float32)
        codes = r.integers(0, 256, size=(7, n * kv // 8), dtype=np.uint8)
        scales = r.random(7).astype(np.float32) + 0.5
        out = np.empty((7, n * V), dtype=np.float32)
        decode_blocks(codes, vals, L, kv, scales, out)
        for i in range(7):
            np.testing.assert_array_equal(out[i], ref_decode_row(codes[i], vals, L, kv, n, scales[i]))


# ----------------------------------------------------------------------------- quantiser

SPECS = [
    "trellis:bits=2,L=10",
    "trellis:bits=1,L=10,code=3inst,scale=vector",
    "trellis:bits=3,L=10,code=lut,scale=block",
    "trellis:bits=4,L=10,T=64",
    "trellis:bits=2,L=10,V=2,code=lut",
    "trellis:bits=2,L=10,V=2,code=hyb,scale=block",
    "trellis:bits=2,L=10,rht=true",
]


@pytest.mark.parametrize("spec", SPECS)
def test_decode_reproduces_viterbi_path_and_serialises(spec, rng):
    x = rng.standard_normal((20, 97)).astype(np.float32) * 3.0
    q = quantizers.get(spec).fit(x)
    xw = q.to_work(x)
    states, scales = q.encode_states(xw)
    codes = q.encode(x)
    assert codes.shape == (20, q.code_size)
    # Packed stream → the same tail-biting path, and the decoder emits exactly its values.
    back = q.decode_states(codes)
    np.testing.assert_array_equal(back, states)
    assert consistent(back, q.L, q.kv)
    nblocks, width = q.block_shape
    expect = (scales[:, None, None] * np.moveaxis(q.table[:, states], 0, -1)).reshape(20, nblocks * width)
    np.testing.assert_array_equal(q.decode_work(codes), expect.astype(np.float32))
    np.testing.assert_array_equal(q.decode(codes), q.from_work(expect.astype(np.float32)))
    # Exactly k bits per (padded) value plus the declared scale bytes.
    scale_bytes = {"global": 0, "vector": 4, "block": 2 * nblocks}[q.scale]
    assert q.code_size == nblocks * width * q.bits // 8 + scale_bytes
    q2 = quantizers.from_bytes(q.to_bytes())
    assert q2.spec == q.spec and isinstance(q2, TrellisQuantizer)
    np.testing.assert_array_equal(q2.decode(codes), q.decode(codes))
    np.testing.assert_array_equal(q2.encode(x[:3]), codes[:3])


@pytest.mark.parametrize("d", ODD_DIMS)
def test_any_dimension_pads_to_whole_bytes(d, rng):
    x = rng.standard_normal((6, d)).astype(np.float32)
    q = quantizers.get("trellis:bits=3,L=8,T=256").fit(x)
    nblocks, width = q.block_shape
    assert nblocks == -(-d // 256) and width % 8 == 0 and 0 <= nblocks * width - d < 8 * nblocks
    x_hat = q.decode(q.encode(x))
    assert x_hat.shape == (6, d)
    assert np.mean((x_hat - x) ** 2) < 0.2


def test_zero_and_constant_rows(rng):
    x = np.zeros((3, 64), dtype=np.float32)
    x[1] = 2.5
    x[2] = rng.standard_normal(64)
    for scale in ("vector", "block"):
        q = quantizers.get(f"trellis:bits=2,L=8,scale={scale}").fit(x)
        x_hat = q.decode(q.encode(x))
        np.testing.assert_array_equal(x_hat[0], 0.0)
        # A pseudo-random code cannot repeat one value along a path: constant blocks are a
        # worst case (≈12 % relative error at L = 8), but the LS scale keeps them bounded.
        assert np.mean((x_hat[1] - 2.5) ** 2) < 0.25 * 2.5**2
    q = quantizers.get("trellis:bits=2,L=8").fit(np.zeros((2, 16), np.float32))  # all-zero training data
    assert np.isfinite(q.decode(q.encode(x[:, :16]))).all()


def test_more_bits_and_more_states_lower_mse():
    x = np.random.default_rng(5).standard_normal((32, 256)).astype(np.float32)
    mse = {}
    for k in (1, 2, 3, 4):
        for L in (8, 12):
            q = quantizers.get(f"trellis:bits={k},L={L}").fit(x)
            mse[k, L] = float(np.mean((q.decode(q.encode(x)) - x) ** 2))
    for k in (1, 2, 3):
        assert mse[k + 1, 12] < 0.5 * mse[k, 12]
    for k in (1, 2, 3, 4):
        assert mse[k, 12] < mse[k, 8]
    # Loose quality gates at L = 12 (the L = 16 targets are checked in the benchmark).
    assert mse[2, 12] < 0.080 and mse[1, 12] < 0.29 and mse[3, 12] < 0.022 and mse[4, 12] < 0.0062, mse


def test_gain_override_and_scales_change_reconstruction(rng):
    x = rng.standard_normal((8, 128)).astype(np.float32)
    q1 = quantizers.get("trellis:bits=2,L=8,gain=1.0").fit(x)
    q2 = quantizers.get("trellis:bits=2,L=8,gain=0.5").fit(x)
    assert q1.effective_gain == 1.0 and q2.effective_gain == 0.5
    e1 = np.mean((q1.decode(q1.encode(x)) - x) ** 2)
    e2 = np.mean((q2.decode(q2.encode(x)) - x) ** 2)
    assert e2 > 1.5 * e1  # a badly mismatched gain must hurt


@pytest.mark.parametrize("spec,err,match", [
    ("trellis:bits=5", errors.InvalidSpec, r"bits must be one of \[1, 2, 3, 4\], got 5"),
    ("trellis:V=3", errors.InvalidSpec, r"V must be one of \[1, 2\], got 3"),
    ("trellis:L=2", errors.InvalidSpec, r"k·V = 2 < L <= 20, got L=2"),
    ("trellis:L=21", errors.InvalidSpec, r"got L=21"),
    ("trellis:T=12", errors.InvalidSpec, r"T must be a positive multiple of 8, got 12"),
    ("trellis:code=e8", errors.InvalidSpec, r"code must be one of"),
    ("trellis:code=1mad,V=2", errors.InvalidSpec, r"needs V=1, got V=2"),
    ("trellis:code=hyb", errors.InvalidSpec, r"'hyb' needs V=2"),
    ("trellis:scale=row", errors.InvalidSpec, r"scale must be one of"),
    ("trellis:gain=-1", errors.InvalidSpec, r"gain must be a finite number >= 0"),
    ("trellis:tail_window=-2", errors.InvalidSpec, r"tail_window must be >= 0"),
    ("trellis:L=abc", errors.InvalidSpec, r"cannot parse L='abc'"),
    ("trellis:bits=1,L=20,T=4096", errors.InvalidSpec, r"back-pointers per thread"),
])
def test_bad_specs_raise_typed_errors(spec, err, match):
    with pytest.raises(err, match=match):
        quantizers.get(spec)


def test_bad_inputs_raise_typed_errors(rng):
    with pytest.raises(errors.InvalidSpec, match="bits must be an integer"):
        TrellisQuantizer(bits=2.5)
    q = quantizers.get("trellis:bits=2,L=8").fit(rng.standard_normal((4, 40)).astype(np.float32))
    with pytest.raises(errors.InvalidCodes, match="must be uint8"):
        q.decode_states(np.zeros((1, q.code_size), np.int16))
    with pytest.raises(errors.DimensionMismatch, match="work rows must have width 40"):
        q.encode_states(np.zeros((1, 39), np.float32))
    qb = quantizers.get("trellis:bits=2,L=8,scale=block").fit(np.ones((1, 8), np.float32))
    with pytest.raises(errors.InvalidInput, match="overflows float16"):
        qb.encode(np.full((1, 8), 1e6, np.float32))


def test_corrupt_state_raises(rng):
    q = quantizers.get("trellis:bits=2,L=10,V=2,code=hyb").fit(rng.standard_normal((4, 16)).astype(np.float32))
    codec_id, header, arrays = read_blob(q.to_bytes())
    short = {**arrays, "hyb_table": arrays["hyb_table"][:10]}
    with pytest.raises(errors.CorruptData, match=r"hyb_table must be finite float32 \(512, 2\)"):
        quantizers.from_bytes(write_blob(codec_id, header, short))
    nan_scale = {**arrays, "global_scale": np.array([np.nan], np.float32)}
    with pytest.raises(errors.CorruptData, match="global_scale must be one finite float32"):
        quantizers.from_bytes(write_blob(codec_id, header, nan_scale))
