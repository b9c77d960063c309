"""ternary: zeroing rules, bitplane and base-3 layouts, popcount dot vs numpy, MSE targets, round trips.

(The protocol checks shared by every family are in test_quantizer_conformance.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import vqtest_reference as ref
from vqsearch.kernels.popcount import ternary_dot_u64, ternary_dot_u64_serial
from vqtest_data import ODD_DIMS

from vqsearch import errors, quantizers
from vqsearch.quantizers.binary import pack_words


def gauss(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def random_trits(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1, 2, size=(n, d)).astype(np.int8)


@pytest.mark.parametrize("d", ODD_DIMS)
@pytest.mark.parametrize("kernel", [ternary_dot_u64, ternary_dot_u64_serial])
def test_ternary_dot_kernel_matches_numpy(d, kernel):
    ta, tb = random_trits(11, d, d), random_trits(9, d, d + 1)
    planes = [np.packbits(t, axis=1) for t in (ta > 0, ta < 0, tb > 0, tb < 0)]
    got = kernel(*(pack_words(p) for p in planes))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref.ternary_dot_ref(ta, tb))
    np.testing.assert_array_equal(got, ref.ternary_dot_popcount_ref(*planes))


@pytest.mark.parametrize("d", ODD_DIMS)
@pytest.mark.parametrize("packing", ["bitplanes", "base3"])
def test_quantizer_ternary_dot_and_bitplanes(d, packing):
    q = quantizers.get("ternary", packing=packing).fit(gauss(4, d, 1))
    ca, cb = q.encode(gauss(7, d, 2)), q.encode(gauss(5, d, 3))
    ta, tb = q.trits(ca), q.trits(cb)
    np.testing.assert_array_equal(q.ternary_dot(ca, cb), ref.ternary_dot_ref(ta, tb))
    p, m = q.bitplanes(ca)
    np.testing.assert_array_equal(p, np.packbits(ta > 0, axis=1))
    np.testing.assert_array_equal(m, np.packbits(ta < 0, axis=1))


@pytest.mark.parametrize("d", ODD_DIMS)
@pytest.mark.parametrize("packing", ["bitplanes", "base3"])
def test_estimate_ip_equals_dot_with_reconstruction(d, packing):
    q = quantizers.get("ternary", packing=packing, mode="optimal").fit(gauss(4, d, 4))
    codes = q.encode(gauss(40, d, 5))
    xq = gauss(6, d, 6)
    want = q.work_queries(xq).astype(np.float64) @ q.decode_work(codes).T.astype(np.float64)
    got = q.estimate_ip(xq, codes)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    # and, via the orthogonal RHT, with the input-domain reconstruction
    np.testing.assert_allclose(got, xq @ q.decode(codes).T, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def test_layouts_are_documented():
    x = np.array([[0.1, -3.0, 2.0, 0.0, -0.2, 5.0, -4.0, 0.05, 1.0, -1.0, 0.3]], np.float32)
    q = quantizers.get("ternary:rht=false,nonzero=0.5").fit(x)  # k = round(5.5) = 6 (banker's: 6)
    t = q.trits(q.encode(x))
    np.testing.assert_array_equal(t, ref.topk_ternary_ref(x, 6))
    codes = q.encode(x)
    assert q.code_size == 2 * 2 + 4
    np.testing.assert_array_equal(codes[:, :2], np.packbits(t > 0, axis=1))
    np.testing.assert_array_equal(codes[:, 2:4], np.packbits(t < 0, axis=1))
    alpha = codes[:, 4:].view("<f4")[0, 0]
    assert alpha == pytest.approx(np.abs(x[t != 0]).mean(), rel=1e-6)  # ⟨x,t⟩/⟨t,t⟩
    q3 = quantizers.get("ternary:rht=false,nonzero=0.5,packing=base3").fit(x)
    c3 = q3.encode(x)
    assert q3.code_size == 3 + 4
    np.testing.assert_array_equal(c3[:, :3], ref.base3_pack_ref(t))
    np.testing.assert_array_equal(q3.decode(c3), q.decode(codes))


@pytest.mark.parametrize("d", (7, 97, 384))
def test_topk_selects_largest_magnitudes(d):
    x = gauss(20, d, 7)
    q = quantizers.get("ternary:rht=false").fit(x)
    t = q.trits(q.encode(x))
    k = round(0.54 * d)
    np.testing.assert_array_equal(t, ref.topk_ternary_ref(x, k))
    assert (np.count_nonzero(t, axis=1) == k).all()


@pytest.mark.parametrize(
    "spec,target,tol",
    [
        ("ternary:mode=optimal", 0.1902, 0.02),
        ("ternary:mode=absmean", 0.2633, 0.02),
        ("ternary", 0.1902, 0.02),  # top-k at the analytic optimum 0.54 (cos 0.8999)
        ("ternary:packing=base3", 0.1902, 0.02),
        ("ternary:nonzero=1.0", 1 - 2 / np.pi, 0.02),  # k = n is sign binarisation
    ],
)
def test_gaussian_mse_targets(spec, target, tol):
    x = gauss(256, 768, 8)
    q = quantizers.get(spec).fit(x)
    mse = float(np.mean((q.reconstruct(x) - x) ** 2))
    assert abs(mse / target - 1) < tol, f"{spec}: MSE {mse:.4f}, expected {target:.4f} ± {tol:.0%}"


def test_zero_fractions_match_the_references():
    x = gauss(256, 768, 9)
    for spec, zeros in (("ternary:mode=optimal", 0.459), ("ternary:mode=absmean", 0.310), ("ternary", 0.46)):
        q = quantizers.get(spec).fit(x)
        frac = float(np.mean(q.trits(q.encode(x)) == 0))
        assert abs(frac - zeros) < 0.01, f"{spec}: {frac:.3f} zeros, expected {zeros}"


@pytest.mark.parametrize("mode", ["topk", "optimal"])
@pytest.mark.parametrize("spec_d", [("rht=false", 97), ("rht=true", 384)])
def test_decode_encode_is_idempotent_for_topk_and_optimal(mode, spec_d):
    spec, d = spec_d
    q = quantizers.get(f"ternary:{spec},mode={mode}").fit(gauss(4, d, 10))
    x1 = q.reconstruct(gauss(30, d, 11))
    c1, c2 = q.encode(x1), q.encode(q.reconstruct(x1))
    np.testing.assert_array_equal(q.trits(c1), q.trits(c2))
    np.testing.assert_allclose(q.decode(c2), x1, atol=2e-5)


def test_absmean_keeps_codes_but_shrinks_scale():
    """BitNet's γ is not a fixed point: re-encoding γ·t gives t again with γ' = γ·nnz(t)/D."""
    d = 97
    q = quantizers.get("ternary:rht=false,mode=absmean").fit(gauss(4, d, 12))
    c1 = q.encode(gauss(30, d, 13))
    c2 = q.encode(q.decode(c1))
    t1 = q.trits(c1)
    np.testing.assert_array_equal(q.trits(c2), t1)
    np.testing.assert_allclose(q.scales(c2), q.scales(c1) * np.count_nonzero(t1, axis=1) / d, rtol=1e-6)


def test_decoders_agree_with_reference_on_random_codes():
    """Fuzz: random valid bytes decode to scale · (P − N) (bitplanes) or the base-3 digits."""
    d = 37
    r = np.random.default_rng(16)
    qb = quantizers.get("ternary:rht=false").fit(gauss(2, d, 0))
    t = random_trits(50, d, 17)
    scale = r.standard_normal(50).astype("<f4")
    codes = np.concatenate([np.packbits(t > 0, axis=1), np.packbits(t < 0, axis=1),
                            scale[:, None].view(np.uint8)], axis=1)
    np.testing.assert_array_equal(qb.decode(codes), t * scale[:, None])
    q3 = quantizers.get("ternary:rht=false,packing=base3").fit(gauss(2, d, 0))
    c3 = np.concatenate([ref.base3_pack_ref(t), scale[:, None].view(np.uint8)], axis=1)
    np.testing.assert_array_equal(q3.decode(c3), t * scale[:, None])


def test_bad_inputs_raise_typed_errors():
    with pytest.raises(errors.InvalidSpec, match=r"mode must be one of \['topk', 'absmean', 'optimal'\]"):
        quantizers.get("ternary:mode=sparse")
    with pytest.raises(errors.InvalidSpec, match=r"nonzero must be in \(0, 1\], got 1.5"):
        quantizers.get("ternary:nonzero=1.5")
    with pytest.raises(errors.InvalidSpec, match="packing must be one of"):
        quantizers.get("ternary:packing=base4")
    d = 16
    q = quantizers.get("ternary:rht=false").fit(gauss(2, d, 0))
    codes = q.encode(gauss(3, d, 1))
    both = codes.copy()
    both[2, 0] |= 0x80
    both[2, 2] |= 0x80  # coordinate 0 in both planes
    with pytest.raises(errors.InvalidCodes, match="row 2: a bit is set in both"):
        q.ternary_dot(both, codes)
    bad_scale = codes.copy()
    bad_scale[0, -4:] = np.array([np.inf], "<f4").view(np.uint8)
    with pytest.raises(errors.InvalidCodes, match="non-finite scale in row 0"):
        q.decode(bad_scale)
    q3 = quantizers.get("ternary:rht=false,packing=base3").fit(gauss(2, d, 0))
    c3 = q3.encode(gauss(2, d, 1))
    c3[1, 0] = 243
    with pytest.raises(errors.InvalidCodes, match="byte > 242 in row 1"):
        q3.decode(c3)
