"""vqsearch.weights: the format grammar and registry, tensor codecs, LDLQ, allocation, statistics.

Model directories (compress / load / decompress / update) are tested in test_weights_archive.py,
serving and remote loading in test_weights_http.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from vqtest_weights import rel_mse

from vqsearch import quantizers, weights
from vqsearch.errors import CorruptData, InvalidInput, InvalidSpec, UnknownQuantizer
from vqsearch.weights import decode_tensor, encode_tensor, estimate_bits, parse_format
from vqsearch.weights.allocate import Option, allocate, fisher_bits
from vqsearch.weights.ldlq import ldlq, proxy_loss
from vqsearch.weights.packing import pack_trits_rows, pack_uint_rows, unpack_trits_rows, unpack_uint_rows
from vqsearch.weights.stats import activation_kurtosis, kurtosis, sqnr_db, tensor_stats

# ----------------------------------------------------------------------------- formats
#: (format, bound on relative MSE for Gaussian weights, nominal code bits per weight).  Bounds are the
#: quantizers.md §0/§8 Gaussian MSEs with ~10 % slack (per-row scales and small tensors add a little).
FORMAT_BOUNDS = [
    ("float32", 0.0, 32),
    ("float16", 1e-7, 16),
    ("int:bits=8", 6e-5, 8),
    ("int4", 0.0125, 4),  # uniform 16 levels with MSE-optimal clip per 128-block (0.0115 at best)
    ("int2", 0.135, 2),  # best uniform 4-level quantiser: 0.1188
    ("ternary", 0.30, 1.6),  # BitNet absmean: 0.2633 on N(0,1)
    ("e8p:bits=2", 0.10, 2),  # 0.0915
    ("e8p:bits=3", 0.033, 3),  # 0.0295
    ("e8p:bits=4", 0.0095, 4),  # 0.0084
    ("e8:bits=2.5", 0.054, 2.5),  # 0.0487
    ("leech:bits=2", 0.086, 2),  # 0.0770
    ("trellis:bits=2,L=10", 0.090, 2),  # L=10 is ~8 % above L=12's 0.0745
    ("sq4", 0.016, 4),
    ("e8p:bits=2,outliers=0.01", 0.10, 2),
]


@pytest.mark.parametrize(("spec", "bound", "nominal"), FORMAT_BOUNDS)
def test_every_format_round_trips_within_its_error_bound(spec: str, bound: float, nominal: float,
                                                         rng: np.random.Generator) -> None:
    w = (rng.standard_normal((64, 384)) * 0.03).astype(np.float32)
    enc = encode_tensor(w, spec, name="layer.weight")
    w_hat = decode_tensor(enc.arrays, enc.meta)
    assert w_hat.shape == w.shape and w_hat.dtype == np.float32
    err = rel_mse(w, w_hat)
    assert err <= bound, f"{spec}: relative MSE {err:.4g} above {bound}"
    if bound > 0:
        assert err > bound / 20, f"{spec}: suspiciously exact ({err:.3g})"
    # Every stored array is counted: nominal bits ≤ bits/param ≤ nominal + scales/state/outliers.
    outlier_bits = 48 * 0.01 if "outliers" in spec else 0.0
    assert nominal <= enc.bits_per_param <= nominal + 0.55 + outlier_bits, enc.bits_per_param
    assert estimate_bits(spec, w.shape, state_bytes=enc.arrays["state"].nbytes if "state" in enc.arrays else 0) \
        == enc.bits


@pytest.mark.parametrize("shape", [(97,), (3, 5, 7), (8, 3, 5, 5), (33, 97), (1, 24)])
@pytest.mark.parametrize("spec", ["e8p:bits=3", "int:bits=3,block=16", "ternary:block=8", "trellis:bits=3,L=8,T=64",
                                  "leech:bits=3"])
def test_odd_shapes_and_reshape_rule(shape: tuple[int, ...], spec: str, rng: np.random.Generator) -> None:
    w = rng.standard_normal(shape).astype(np.float32)
    enc = encode_tensor(w, spec, name="odd")
    w_hat = decode_tensor(enc.arrays, enc.meta)
    assert w_hat.shape == shape
    m = shape[0] if len(shape) > 1 else 1
    assert (enc.meta["rows"], enc.meta["cols"]) == (m, w.size // m)
    assert rel_mse(w, w_hat) < (0.45 if "ternary" in spec else 0.12)
    assert estimate_bits(spec, shape, state_bytes=enc.arrays["state"].nbytes if "state" in enc.arrays else 0) \
        == enc.bits


def test_zero_rows_and_zero_tensor_decode_exactly(rng: np.random.Generator) -> None:
    w = rng.standard_normal((16, 64)).astype(np.float32)
    w[3] = 0.0
    for spec in ("e8p:bits=2", "int4", "ternary", "leech:bits=2"):
        enc = encode_tensor(w, spec, name="z")
        w_hat = decode_tensor(enc.arrays, enc.meta)
        assert np.all(w_hat[3] == 0.0) or spec == "e8p:bits=2" and np.abs(w_hat[3]).max() < 1e-6
        zeros = np.zeros((8, 32), np.float32)
        enc = encode_tensor(zeros, spec, name="z")
        np.testing.assert_array_equal(decode_tensor(enc.arrays, enc.meta), zeros)


def test_int_and_ternary_codes_match_a_plain_reference(rng: np.random.Generator) -> None:
    w = rng.standard_normal((5, 40)).astype(np.float32)
    enc = encode_tensor(w, "int:bits=3,block=8,scaling=absmax", name="r")
    step = np.abs(w.reshape(5, 5, 8)).max(axis=2) / 3.5
    step = step.astype(np.float16).astype(np.float32)
    ref = np.clip(np.rint(w.reshape(5, 5, 8) / step[..., None] + 3.5), 0, 7) - 3.5
    np.testing.assert_array_equal(decode_tensor(enc.arrays, enc.meta), (ref * step[..., None]).reshape(5, 40))
    enc = encode_tensor(w, "ternary", name="t")
    gamma = np.abs(w).mean(axis=1).astype(np.float16).astype(np.float32)
    t = np.clip(np.rint(w / gamma[:, None]), -1, 1)
    np.testing.assert_array_equal(decode_tensor(enc.arrays, enc.meta), t * gamma[:, None])


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6, 7, 8])
def test_bit_packing_round_trips(k: int, rng: np.random.Generator) -> None:
    sym = rng.integers(0, 2**k, size=(7, 61)).astype(np.uint8)
    packed = pack_uint_rows(sym, k)
    assert packed.shape == (7, 8 * k)
    np.testing.assert_array_equal(unpack_uint_rows(packed, k, 61), sym)
    # LSB-first bit stream: value j occupies bits [j·k, (j+1)·k) of its row
    bits = np.unpackbits(packed[0], bitorder="little")
    ref = [int("".join(str(b) for b in bits[j * k:(j + 1) * k][::-1]), 2) for j in range(61)]
    assert ref == sym[0].tolist()
    trits = rng.integers(-1, 2, size=(3, 23)).astype(np.int8)
    np.testing.assert_array_equal(unpack_trits_rows(pack_trits_rows(trits), 23), trits)
    with pytest.raises(CorruptData, match="byte > 242"):
        unpack_trits_rows(np.full((1, 5), 250, np.uint8), 23)


def test_outliers_are_kept_exactly_and_help_heavy_tails(rng: np.random.Generator) -> None:
    w = (rng.standard_t(2, size=(64, 256)) * 0.02).astype(np.float32)
    dense = encode_tensor(w, "int4", name="h")
    sparse = encode_tensor(w, "int4:outliers=0.01", name="h")
    w_s = decode_tensor(sparse.arrays, sparse.meta)
    idx = sparse.arrays["outlier_index"]
    assert idx.size == math.ceil(0.01 * w.size)
    np.testing.assert_array_equal(w_s.reshape(-1)[idx], w.reshape(-1)[idx].astype(np.float16).astype(np.float32))
    assert np.abs(w.reshape(-1)[idx]).min() >= np.partition(np.abs(w).ravel(), -idx.size)[-idx.size]
    assert rel_mse(w, w_s) < 0.5 * rel_mse(w, decode_tensor(dense.arrays, dense.meta))


def test_rht_makes_heavy_tails_gaussian_and_lowers_error(rng: np.random.Generator) -> None:
    w = (rng.standard_t(3, size=(128, 384)) * 0.02).astype(np.float32)
    plain = encode_tensor(w, "e8p:bits=2,rht=false", name="x")
    rot = encode_tensor(w, "e8p:bits=2", name="x")
    assert rel_mse(w, decode_tensor(rot.arrays, rot.meta)) < 0.7 * rel_mse(w, decode_tensor(plain.arrays, plain.meta))


@pytest.mark.parametrize(("spec", "exc", "match"), [
    ("", InvalidSpec, "non-empty"),
    ("int:bits=9", InvalidSpec, "bits in 2..8"),
    ("int:bits=4,scaling=max", InvalidSpec, "scaling must be"),
    ("float16:rht=true", InvalidSpec, "takes no parameters"),
    ("e8p:bits=2,outliers=0.7", InvalidSpec, r"outliers must be a fraction in \[0, 0.5\)"),
    ("e8p:bits=2,block=12", InvalidSpec, "multiple of the tile width 8"),
    ("e8p:bits=5", InvalidSpec, "bits must be 2, 3 or 4"),
    ("nosuch:bits=2", UnknownQuantizer, "unknown weight format or quantiser 'nosuch'"),
    ("trellis:bits=2,T=24", InvalidSpec, "multiple of 16"),
    ("e8p:bits=2,rht=maybe", InvalidSpec, "cannot parse rht='maybe' as bool"),
    # one grammar: "ternary" is the BitNet weight format, never silently the embedding quantiser
    ("ternary:mode=absmean", InvalidSpec, "weight format 'ternary' has no parameter 'mode'"),
    ("binary", InvalidSpec, "'binary' does not declare a weight tile shape"),
    ("e8p:bits=2,tile=16", InvalidSpec, "e8p encodes 1×8 tiles"),
    ("e8p:bits=2,seed=1", InvalidSpec, "seeds each tensor's rotation itself"),
    ("trellis:bits=2,nope=1", InvalidSpec, "trellis has no parameter 'nope'"),
])
def test_bad_format_specs_raise_typed_errors(spec: str, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        parse_format(spec)


def test_canonical_spec_round_trips() -> None:
    for spec in ("int4", "ternary", "e8p:bits=3", "trellis:bits=2,L=12", "leech", "float16", "sq4:block=64"):
        f = parse_format(spec)
        assert parse_format(f.spec) == f
    assert parse_format("int4").spec == "int:bits=4,scaling=mse,rht=false,block=128,outliers=0"
    assert parse_format("int4:ldlq=false").spec.endswith(",ldlq=false")  # ldlq shows only when it is off
    assert parse_format("trellis:bits=2,L=12").tile_shape() == (16, 16)
    assert parse_format("e8:bits=2.25").tile_shape() == (1, 32)  # 18 bits per 8 values: 4 blocks = 9 bytes


@pytest.mark.parametrize("name", sorted(quantizers.available()))
def test_every_registered_quantizer_is_a_weight_format_or_refused_by_name(name: str,
                                                                         rng: np.random.Generator) -> None:
    """No family silently gets a default tile: it declares one (and round-trips) or the spec is refused."""
    if name in weights.available() and name not in ("float16", "ternary"):
        fmt = parse_format(name)
        w = rng.standard_normal((64, 96)).astype(np.float32)
        enc = encode_tensor(w, fmt, name="w")
        assert rel_mse(w, decode_tensor(enc.arrays, enc.meta)) < 0.5
        assert enc.meta["tile"] == list(fmt.tile_shape())
    elif name in ("float16", "ternary"):  # weight formats of the same name win: never the quantiser
        assert parse_format(name).kind == name
    else:
        with pytest.raises(InvalidSpec, match=f"'{name}' does not declare a weight tile shape"):
            parse_format(name)


def test_weight_format_names_win_over_quantizer_aliases() -> None:
    assert quantizers.parse_spec("int4")[0].name == "sq4"  # the embedding quantiser's alias ...
    assert parse_format("int4").kind == "int" and parse_format("int4").bits == 4  # ... is not the weight format
    assert parse_format("absmean") == parse_format("bitnet") == parse_format("ternary")
    assert parse_format("quip#:bits=2") == parse_format("e8p:bits=2")  # quantiser aliases still work


def test_trellis_weight_default_length_is_spelled_out() -> None:
    """A trellis weight spec without L gets the fast weights default; L=16 stays available, explicitly."""
    default_l = quantizers.get("trellis").weight_defaults["L"]
    assert default_l < quantizers.get("trellis").L  # the embedding quantiser keeps its own default
    assert parse_format("trellis:bits=4").quantizer == f"trellis:bits=4,L={default_l}"
    assert parse_format("trellis:bits=4,L=16").quantizer == "trellis:bits=4,L=16"
    assert parse_format(parse_format("trellis:bits=4,L=16").spec) == parse_format("trellis:bits=4,L=16")


@pytest.mark.parametrize("spec", ["e8p:bits=2", "int4", "trellis:bits=2,L=8"])
def test_encoding_reports_progress_by_columns(spec: str, rng: np.random.Generator) -> None:
    w = rng.standard_normal((512, 768)).astype(np.float32)
    for hessian in (None, np.eye(768)):
        seen: list[float] = []
        enc = encode_tensor(w, spec, name="p", hessian=hessian, progress=seen.append)
        assert len(seen) >= 2 and seen == sorted(seen) and seen[-1] == 1.0
        assert enc.meta["rounding"] == ("nearest" if hessian is None else "ldlq")


# ----------------------------------------------------------------------------- LDLQ
def _anisotropic_hessian(rng: np.random.Generator, n: int, tokens: int = 4000) -> np.ndarray:
    scales = np.exp(rng.standard_normal(n) * 1.5)
    mix = np.eye(n) + 0.3 * rng.standard_normal((n, n)) / np.sqrt(n)
    x = (rng.standard_normal((tokens, n)) * scales) @ mix
    return x.T @ x / tokens


def test_ldlq_with_identity_hessian_is_nearest_rounding(rng: np.random.Generator) -> None:
    w = rng.standard_normal((20, 32)).astype(np.float32)

    def q(j: int, t: np.ndarray) -> np.ndarray:
        return np.round(t * 3) / 3

    np.testing.assert_array_equal(ldlq(w, np.eye(32), q, 8, damp=0.0), q(0, w))


def test_ldlq_lowers_the_proxy_loss_against_a_brute_force_reference(rng: np.random.Generator) -> None:
    n, m, g = 24, 30, 4
    w = rng.standard_normal((m, n))
    h = _anisotropic_hessian(rng, n)

    def q(j: int, t: np.ndarray) -> np.ndarray:
        return np.round(t * 2) / 2

    got = ldlq(w, h, q, g, damp=0.0, lazy=8)
    # Reference: the OBS update written directly with the inverse of the trailing Hessian block.
    ref = np.zeros_like(w)
    work = w.copy()
    for c0 in range(0, n, g):
        c1 = c0 + g
        ref[:, c0:c1] = q(0, work[:, c0:c1])
        e = work[:, c0:c1] - ref[:, c0:c1]
        hinv = np.linalg.inv(h[c0:, c0:])
        work[:, c1:] -= e @ np.linalg.solve(hinv[:g, :g], hinv[:g, g:])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert proxy_loss(w, got, h) < 0.7 * proxy_loss(w, q(0, w), h)


@pytest.mark.parametrize("spec", ["e8p:bits=2", "int:bits=3,rht=true,block=0", "trellis:bits=2,L=8"])
def test_ldlq_in_encode_tensor_beats_nearest_on_a_synthetic_layer(spec: str, rng: np.random.Generator) -> None:
    n = 128
    w = (rng.standard_normal((64, n)) * 0.05).astype(np.float32)
    h = _anisotropic_hessian(rng, n)
    near = encode_tensor(w, spec, name="layer")
    adap = encode_tensor(w, spec, name="layer", hessian=h)
    loss_near = proxy_loss(w, decode_tensor(near.arrays, near.meta), h)
    loss_ldlq = proxy_loss(w, decode_tensor(adap.arrays, adap.meta), h)
    assert loss_ldlq < 0.75 * loss_near, (loss_ldlq, loss_near)
    assert adap.bits == near.bits


# ----------------------------------------------------------------------------- allocation
def test_fisher_bits_equalise_marginal_gains(rng: np.random.Generator) -> None:
    n = rng.integers(1_000, 1_000_000, size=12).astype(float)
    r = np.exp(rng.standard_normal(12))
    f = np.exp(2 * rng.standard_normal(12))
    b = fisher_bits(n, r, f, 3.0, min_bits=2.0)
    assert np.isclose(np.sum(n * b), 3.0 * n.sum())
    assert b.min() >= 2.0 - 1e-12
    # ∂/∂b_t of n_t F_t RMS_t² 2^(−2 b_t), per parameter, is the same for every unclipped tensor
    gain = 2 * np.log(2) * f * r**2 * 2.0 ** (-2 * b)
    free = b > 2.0 + 1e-9
    assert free.sum() >= 3
    np.testing.assert_allclose(gain[free], gain[free][0], rtol=1e-9)
    assert np.all(gain[~free] <= gain[free][0] * (1 + 1e-9))  # clipped ones would gain less
    # the closed form: b_t − log2 RMS_t − ½ log2 F_t is constant on the free set
    lvl = b - np.log2(r) - 0.5 * np.log2(f)
    np.testing.assert_allclose(lvl[free], lvl[free][0], rtol=1e-12)


def test_discrete_allocation_respects_the_budget_and_beats_uniform(rng: np.random.Generator) -> None:
    rates = [2.0, 2.5, 3.0, 3.5, 4.0]
    n = rng.integers(10_000, 100_000, size=10)
    sens = np.exp(2 * rng.standard_normal(10))
    opts = {f"t{i}": [Option(f"r{b}", float(b * n[i]), float(sens[i] * n[i] * 2.0 ** (-2 * b))) for b in rates]
            for i in range(10)}
    budget = 3.0 * n.sum()
    choice = allocate(opts, budget)
    spent = sum(c.bits for c in choice.values())
    assert spent <= budget
    uniform = sum(o[2].distortion for o in opts.values())
    assert sum(c.distortion for c in choice.values()) < 0.9 * uniform
    # most sensitive tensor gets at least as many bits per weight as the least sensitive
    per = {k: c.bits / n[int(k[1:])] for k, c in choice.items()}
    assert per[f"t{int(np.argmax(sens))}"] >= per[f"t{int(np.argmin(sens))}"]
    with pytest.raises(InvalidInput, match="cheapest formats need"):
        allocate(opts, 1.0 * n.sum())


def test_compress_with_target_bits_meets_the_average(tmp_path: Path, rng: np.random.Generator) -> None:
    tensors = {f"l{i}.weight": (rng.standard_normal((128, 256)) * (0.01 * (i + 1))).astype(np.float32)
               for i in range(4)}
    tensors["l0.bias"] = rng.standard_normal(128).astype(np.float32)
    src = tmp_path / "m.safetensors"
    save_file(tensors, str(src))
    res = weights.compress(src, tmp_path / "out", target_bits=3.0, progress=False,
                           candidates=("e8:bits=2", "e8:bits=3", "e8:bits=4"))
    assert res.bits_per_param <= 3.0
    assert res.bits_per_param > 2.6
    assert res.allocation["mode"] == "proxy"
    chosen = {t.name: t.format for t in res.tensors}
    assert chosen["l0.bias"] == "float16"
    with pytest.raises(InvalidSpec, match="either format .* or target_bits"):
        weights.compress(src, tmp_path / "x", format="e8p:bits=2", target_bits=3.0, progress=False)
    with pytest.raises(InvalidSpec, match="'fisher' needs calibration"):
        weights.compress(src, tmp_path / "y", target_bits=3.0, allocate="fisher", progress=False)


def test_allocator_uses_sparse_outliers_where_they_pay(tmp_path: Path, rng: np.random.Generator) -> None:
    tensors = {"gauss.weight": (rng.standard_normal((128, 256)) * 0.02).astype(np.float32),
               "heavy.weight": (rng.standard_t(1.5, size=(128, 256)) * 0.02).astype(np.float32)}
    src = tmp_path / "m.safetensors"
    save_file(tensors, str(src))
    cands = ("int:bits=3", "int:bits=4", "int:bits=3,outliers=0.01")
    res = weights.compress(src, tmp_path / "out", target_bits=3.7, progress=False, candidates=cands)
    chosen = {t.name: t.format for t in res.tensors}
    assert "outliers=0.01" in chosen["heavy.weight"], chosen
    assert "outliers=0" in chosen["gauss.weight"] and "outliers=0.01" not in chosen["gauss.weight"], chosen
    assert res.bits_per_param <= 3.7


# ----------------------------------------------------------------------------- stats
def test_statistics_against_references(rng: np.random.Generator) -> None:
    g = rng.standard_normal(200_000)
    assert abs(kurtosis(g) - 3.0) < 0.05
    assert kurtosis(rng.standard_t(5, size=200_000)) > 5.0
    s = tensor_stats(np.array([3.0, -4.0]))
    assert s.rms == pytest.approx(math.sqrt(12.5)) and s.max_over_rms == pytest.approx(4 / math.sqrt(12.5))
    h = np.diag([1.0, 1.0, 1.0, 1.0])
    assert activation_kurtosis(np.diag(h)) == 1.0
    assert activation_kurtosis(np.array([4.0, 0, 0, 0])) == 4.0  # one feature carries everything
    assert sqnr_db(np.ones(4), np.ones(4) * 0.9) == pytest.approx(20.0)
    assert sqnr_db(np.ones(4), np.ones(4)) == math.inf
