"""sq8 / sq4: kernels vs numpy, nibble layout, MSE targets, clipping, round trips; cross-family MSE order.

(The protocol checks shared by every family are in test_quantizer_conformance.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import vqtest_reference as ref
from vqsearch.kernels import scalar as ks
from vqtest_data import ODD_DIMS

from vqsearch import errors, quantizers


def gauss(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def params(d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = np.random.default_rng(seed)
    lo = (-2.0 - r.random(d)).astype(np.float32)
    step = (0.05 + 0.3 * r.random(d)).astype(np.float32)
    step[0] = 0.0  # a constant dimension
    inv = np.where(step > 0, 1 / np.where(step > 0, step, 1), 0).astype(np.float32)
    return lo, step, inv


@pytest.mark.parametrize("d", ODD_DIMS)
@pytest.mark.parametrize("suffix", ["", "_serial"])
def test_scalar_kernels_match_numpy(d, suffix):
    sq_encode8, sq_encode4 = getattr(ks, "sq_encode8" + suffix), getattr(ks, "sq_encode4" + suffix)
    sq_decode8, sq_decode4 = getattr(ks, "sq_decode8" + suffix), getattr(ks, "sq_decode4" + suffix)
    x = 3 * gauss(33, d, d)  # includes values outside every range (clipping)
    lo, step, inv = params(d, d)
    k8 = ref.sq_encode_ref(x, lo, inv, 256)
    k4 = ref.sq_encode_ref(x, lo, inv, 16)
    np.testing.assert_array_equal(sq_encode8(x, lo, inv), k8)
    np.testing.assert_array_equal(sq_encode4(x, lo, inv), ref.pack_nibbles_ref(k4))
    np.testing.assert_array_equal(sq_decode8(k8.astype(np.uint8), lo, step), ref.sq_decode_ref(k8, lo, step))
    np.testing.assert_array_equal(sq_decode4(ref.pack_nibbles_ref(k4), lo, step),
                                  ref.sq_decode_ref(k4, lo, step))
    want = ref.column_sse_ref(x, lo, step, inv, 16)
    np.testing.assert_allclose(ks.sq_column_sse(x, lo, step, inv, 16), want, rtol=1e-6)


@pytest.mark.parametrize("d", (1, 7, 97))
@pytest.mark.parametrize("suffix", ["", "_serial"])
def test_decoders_on_random_code_bytes(d, suffix):
    """Fuzz: any byte is a valid code; the high nibble of the last byte is ignored for odd d."""
    sq_decode8, sq_decode4 = getattr(ks, "sq_decode8" + suffix), getattr(ks, "sq_decode4" + suffix)
    r = np.random.default_rng(d)
    lo, step, _ = params(d, d + 1)
    codes = r.integers(0, 256, size=(40, d), dtype=np.uint8)
    np.testing.assert_array_equal(sq_decode8(codes, lo, step), ref.sq_decode_ref(codes, lo, step))
    packed = r.integers(0, 256, size=(40, (d + 1) // 2), dtype=np.uint8)
    np.testing.assert_array_equal(sq_decode4(packed, lo, step),
                                  ref.sq_decode_ref(ref.unpack_nibbles(packed, d), lo, step))


def test_sq4_nibble_layout_and_code_size():
    q = quantizers.get("sq4:clip=minmax").fit(np.array([[0.0, 0, 0], [15, 15, 15]], np.float32))
    codes = q.encode(np.array([[1.0, 2.0, 3.0]], np.float32))
    assert q.code_size == 2 and q.bits_per_dim == pytest.approx(16 / 3)
    assert codes.tolist() == [[0x21, 0x03]]  # dim 0 low nibble, dim 1 high nibble, dim 2 low of byte 1


@pytest.mark.parametrize("spec,limit", [("sq4", 0.012), ("sq8", 1.0e-4)])
def test_gaussian_mse_targets(spec, limit):
    xt, x = gauss(8192, 96, 1), gauss(4096, 96, 2)
    q = quantizers.get(spec).fit(xt)
    mse = float(np.mean((q.reconstruct(x) - x) ** 2))
    assert mse <= limit, f"{spec}: MSE {mse:.3g} > {limit}"
    assert q.bits_per_dim == q.bits


def test_mse_clipping_beats_minmax():
    xt, x = gauss(8192, 64, 3), gauss(4096, 64, 4)
    out = {}
    for spec in ("sq4", "sq4:clip=minmax", "sq8", "sq8:clip=minmax"):
        q = quantizers.get(spec).fit(xt)
        out[spec] = float(np.mean((q.reconstruct(x) - x) ** 2))
    assert out["sq4"] < 0.7 * out["sq4:clip=minmax"], out
    assert out["sq8"] < out["sq8:clip=minmax"], out


def test_clipping_adapts_per_dimension():
    xt = gauss(4096, 3, 5) * np.array([0.01, 1.0, 100.0], np.float32) + np.array([5, 0, -50], np.float32)
    q = quantizers.get("sq4").fit(xt)
    hi = q.lo + 15 * q.step
    np.testing.assert_allclose((hi - q.lo) / np.array([0.01, 1, 100]), 5.0, rtol=0.1)  # ≈ ±2.5σ
    centre_err = np.abs((hi + q.lo) / 2 - np.array([5, 0, -50])) / np.array([0.01, 1, 100])
    assert (centre_err < 0.1).all(), centre_err


def test_constant_dimension_decodes_exactly():
    xt = gauss(100, 4, 6)
    xt[:, 2] = 1.25
    q = quantizers.get("sq8").fit(xt)
    x = gauss(5, 4, 7)
    x[:, 2] = 1.25
    xh = q.reconstruct(x)
    assert np.isfinite(xh).all()
    np.testing.assert_array_equal(xh[:, 2], 1.25)


@pytest.mark.parametrize("spec,d", [("sq8", 97), ("sq4", 97), ("sq8:rht=true", 384), ("sq4:rht=true", 384)])
def test_decode_encode_is_idempotent_on_decoded_points(spec, d):
    q = quantizers.get(spec).fit(gauss(500, d, 8))
    c1 = q.encode(gauss(50, d, 9))
    x1 = q.decode(c1)
    np.testing.assert_array_equal(q.encode(x1), c1)


def test_bad_spec_raises_a_typed_error():
    with pytest.raises(errors.InvalidSpec, match=r"clip must be one of \['mse', 'minmax'\], got 'max'"):
        quantizers.get("sq8:clip=max")


def test_mse_strictly_decreases_with_bits_across_families():
    """N(0,1): binary (1 bit) > ternary (1.58) > sq4 (4) > sq8 (8), and within each family."""
    xt, x = gauss(4096, 64, 12), gauss(1024, 64, 13)
    specs = ["binary", "ternary", "sq4", "sq8"]
    mse = {}
    for spec in specs + ["ternary:packing=base3"]:
        q = quantizers.get(spec).fit(xt)
        mse[spec] = float(np.mean((q.reconstruct(x) - x) ** 2))
    values = [mse[s] for s in specs]
    assert all(a > 1.5 * b for a, b in zip(values, values[1:])), mse
    assert mse["ternary:packing=base3"] == mse["ternary"]  # same codes, denser storage
