"""The quantiser protocol, checked for every registered family (``quantizers.available()``).

Each family's default spec, plus the code layouts of existing families that differ from their defaults
(``LAYOUT_VARIANTS``), must: round-trip its spec; encode to C-contiguous uint8 ``(n, code_size)`` with
the code size announced before fitting; decode to finite float32 ``(n, d)``; keep inner products in its
work domain; serialise bit-exactly; and answer bad input with typed errors that name the problem, at
odd dimensions too.  A new family is covered by registering it; its own test file keeps what is specific
to it (references, brute-force checks, quality targets).
"""

from __future__ import annotations

import numpy as np
import pytest
from vqtest_blobs import read_blob, write_blob

from vqsearch import errors, quantizers

#: Specs of existing families whose code layout or fitted state differs from the family default.
LAYOUT_VARIANTS = [
    "binary:rht=false,centre=false",
    "ternary:packing=base3", "ternary:mode=absmean,rht=false",
    "pq:m=7,nbits=4,rht=true", "opq:m=4,nbits=8,opq_niter=2",
    "sq4:rht=true,clip=minmax",
    "float16:rht=true",
    "e8p:bits=3", "e8p:bits=4,scale=vector,rht=true", "e8:bits=3.5,scale=vector",
    "leech:bits=1.5,scale=vector",
    "trellis:bits=3,L=10,scale=block", "trellis:bits=2,L=10,V=2,code=hyb",
    "trellis:bits=1,L=10,code=3inst,scale=vector",
]
SPECS = sorted(quantizers.available()) + LAYOUT_VARIANTS
DIMS = (1, 7, 97)
N_TRAIN = 300  # enough for every default (8-bit PQ needs one training vector per centroid: 256)

#: Codec ids are written into stored data: once given, an id keeps its family forever.
FIXED_CODEC_IDS = {1: "sq8", 2: "sq4", 3: "binary", 4: "ternary", 5: "pq", 6: "opq", 7: "float16", 10: "e8p",
                   11: "e8", 13: "leech", 20: "trellis"}


def data(n: int, d: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, d)) + 0.25).astype(np.float32)


_FITTED: dict[tuple[str, int], quantizers.Quantizer] = {}


def fitted(spec: str, d: int) -> quantizers.Quantizer:
    """A quantiser of ``spec`` fitted on seeded data of dimension ``d`` (cached: fitting is the slow part)."""
    if (spec, d) not in _FITTED:
        _FITTED[spec, d] = quantizers.get(spec).fit(data(N_TRAIN, d, seed=d))
    return _FITTED[spec, d]


def test_codec_ids_and_names_are_unique_and_stable():
    ids = quantizers.codec_ids()
    assert sorted(ids.values()) == sorted(quantizers.available()), "every registered family has one codec id"
    assert len(set(ids.values())) == len(ids)
    for codec_id, name in ids.items():
        assert quantizers.by_codec_id(codec_id).name == name and quantizers.by_codec_id(codec_id).codec_id == codec_id
    changed = {i: (ids.get(i), name) for i, name in FIXED_CODEC_IDS.items() if ids.get(i) != name}
    assert changed == {}, f"codec ids reassigned (stored data would decode with the wrong family): {changed}"
    with pytest.raises(errors.UnknownQuantizer, match="no quantiser with codec id 9999"):
        quantizers.by_codec_id(9999)


def test_registration_rejects_duplicates():
    existing = quantizers.by_codec_id(3)

    class Clash(existing):  # same name and codec id as a registered family
        pass

    with pytest.raises(TypeError, match="duplicate quantiser registration: binary / 3"):
        quantizers.register(Clash)
    assert quantizers.by_codec_id(3) is existing


@pytest.mark.parametrize("spec", SPECS)
def test_spec_round_trips(spec):
    q = quantizers.get(spec)
    again = quantizers.get(q.spec)
    assert type(again) is type(q) and again.params() == q.params() and again.spec == q.spec
    assert q.name in quantizers.available() and q.description


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("spec", SPECS)
def test_encode_decode_shapes_and_dtypes(spec, d):
    q = fitted(spec, d)
    x = data(40, d, seed=100 + d)
    codes = q.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (40, q.code_size) and codes.flags.c_contiguous
    assert q.code_size == quantizers.get(spec).code_size_for(d), "code size must be known before fitting"
    assert q.bits_per_dim == pytest.approx(8 * q.code_size / d) and q.d == d
    x_hat = q.decode(codes)
    assert x_hat.dtype == np.float32 and x_hat.shape == (40, d) and np.isfinite(x_hat).all()
    np.testing.assert_array_equal(q.reconstruct(x), x_hat)
    assert q.encode(np.zeros((0, d), np.float32)).shape == (0, q.code_size)
    assert q.decode(np.zeros((0, q.code_size), np.uint8)).shape == (0, d)
    if d >= 7:  # any code must beat the zero vector (tiny dimensions sit mostly in padding)
        rel = float(np.sum((x_hat - x) ** 2) / np.sum(x**2))
        assert rel < 1.0, f"{q.spec} d={d}: relative error {rel:.3f}"


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("spec", SPECS)
def test_work_domain_capabilities(spec, d):
    """What scanners and rescoring use: inner products in the work domain equal those in the input domain
    (RHT orthogonal, padding zero), ``ip_pairs`` equals decode-then-dot, scan terms have one value per row."""
    q = fitted(spec, d)
    codes = q.encode(data(30, d, seed=200 + d))
    xq = data(5, d, seed=300 + d)
    work_queries = q.work_queries(xq)
    decoded = q.decode_work(codes)
    assert work_queries.shape == (5, q.work_dim) and decoded.shape == (30, q.work_dim) and q.work_dim >= d
    assert q.rotate(work_queries).shape == work_queries.shape
    ip = work_queries.astype(np.float64) @ decoded.T.astype(np.float64)
    scale = max(1.0, float(np.abs(ip).max()))
    np.testing.assert_allclose(ip, xq.astype(np.float64) @ q.decode(codes).T, rtol=1e-3, atol=1e-4 * scale)
    rng = np.random.default_rng(d)
    query_of_pair = rng.integers(0, 5, 200).astype(np.int64)
    row_of_pair = rng.integers(0, 25, 200).astype(np.int64)  # rows 25..29 unused, others repeated
    pairs = q.ip_pairs(work_queries, query_of_pair, codes, row_of_pair)
    np.testing.assert_allclose(pairs, ip[query_of_pair, row_of_pair], rtol=1e-4, atol=1e-4 * scale)
    assert q.ip_pairs(work_queries, query_of_pair[:0], codes, row_of_pair[:0]).shape == (0,)
    terms = q.scan_terms(codes)
    for part in (terms.offset, terms.scale) + (() if terms.error is None else (terms.error,)):
        assert part.dtype == np.float32 and part.shape in ((0,), (30,))
    estimate = q.estimate_ip(xq, codes)
    assert estimate.shape == (5, 30) and np.isfinite(estimate).all()


@pytest.mark.parametrize("spec", SPECS)
def test_serialisation_is_bit_exact(spec):
    q = fitted(spec, 97)
    blob = q.to_bytes()
    again = quantizers.from_bytes(blob)
    assert type(again) is type(q) and again.params() == q.params() and again.d == q.d
    assert again.code_size == q.code_size and again.to_bytes() == blob
    x = data(20, 97, seed=400)
    codes = q.encode(x)
    np.testing.assert_array_equal(again.encode(x), codes)
    np.testing.assert_array_equal(again.decode(codes), q.decode(codes))
    np.testing.assert_array_equal(again.estimate_ip(x[:3], codes), q.estimate_ip(x[:3], codes))
    codec_id, header, arrays = read_blob(blob)  # the independent reader agrees with the documented layout
    assert codec_id == q.codec_id and header["name"] == q.name and header["d"] == 97
    assert write_blob(codec_id, header, arrays) == blob


@pytest.mark.parametrize("spec", SPECS)
def test_bad_input_raises_typed_errors(spec):
    d = 7
    q = fitted(spec, d)
    x = data(3, d, seed=500)
    codes = q.encode(x)
    with pytest.raises(errors.DimensionMismatch, match="has dimension 6, expected 7"):
        q.encode(x[:, :6])
    with pytest.raises(errors.DimensionMismatch, match="queries has dimension 8, expected 7"):
        q.estimate_ip(data(1, 8, seed=0), codes)
    with pytest.raises(errors.NonFiniteInput, match="NaN or inf"):
        q.encode(np.full((1, d), np.nan, np.float32))
    with pytest.raises(errors.InvalidInput, match="must be 2-D"):
        q.encode(x[0])
    with pytest.raises(errors.InvalidInput, match="must be numeric"):
        q.encode(np.array([["a"] * d]))
    with pytest.raises(errors.InvalidCodes, match=f"expected code_size {q.code_size}"):
        q.decode(np.zeros((1, q.code_size + 1), np.uint8))
    with pytest.raises(errors.InvalidCodes, match="must be uint8"):
        q.decode(codes.astype(np.int32))
    with pytest.raises(errors.NotFitted, match="must be fitted"):
        quantizers.get(spec).decode(codes)
    if not quantizers.get(spec).data_free:
        with pytest.raises(errors.NotFitted, match="must be fitted"):
            quantizers.get(spec).encode(x)
    with pytest.raises(errors.EmptyInput, match="needs at least .* training vectors, got 0"):
        quantizers.get(spec).fit(np.zeros((0, d), np.float32))
    with pytest.raises(errors.InvalidSpec, match="has no parameter 'bogus'"):
        quantizers.get(f"{spec},bogus=1" if ":" in spec else f"{spec}:bogus=1")
    blob = q.to_bytes()
    with pytest.raises(errors.CorruptData, match="checksum"):
        quantizers.from_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(errors.CorruptData, match="too short"):
        quantizers.from_bytes(blob[:5])
    with pytest.raises(errors.CorruptData, match="magic"):
        quantizers.from_bytes(b"XXXX" + blob[4:])
    codec_id, header, arrays = read_blob(blob)
    with pytest.raises(errors.CorruptData, match="newer than supported"):
        quantizers.from_bytes(write_blob(codec_id, {**header, "format_version": q.format_version + 1}, arrays))
