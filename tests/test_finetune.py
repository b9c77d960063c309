"""Fine-tuning after rounding: the stored-format adapter, the torch reconstruction, the discrete step,
and whole runs (deterministic, resumable, layout-preserving, better on held-out texts)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vqsearch.errors import InvalidInput, InvalidSpec
from vqsearch.rht import RandomizedHadamard
from vqsearch.weights.codec import decode_tensor, encode_tensor
from vqsearch.weights.finetune import FinetuneOptions
from vqsearch.weights.finetune_codes import StoredQuantised

torch = pytest.importorskip("torch")

FORMATS = ["e8p:bits=2", "trellis:bits=2,L=8", "e8:bits=2.5", "int4", "int:bits=3,rht=true,block=0", "ternary",
           "e8p:bits=2,outliers=0.01", "e8p:bits=4,block=32"]


def _tensor(shape=(48, 100), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_t(5, size=shape) * 0.05).astype(np.float32)


@pytest.mark.parametrize("d", [64, 100, 384])
def test_torch_inverse_rht_matches_numpy(d):
    from vqsearch.weights.finetune_model import InverseRHT

    t = RandomizedHadamard(d, seed=7)
    y = np.random.default_rng(1).standard_normal((5, t.n)).astype(np.float32)
    got = InverseRHT(d, 7)(torch.from_numpy(y)).numpy()
    assert np.allclose(got, t.inverse(y), atol=1e-5)


@pytest.mark.parametrize("spec", FORMATS)
def test_stored_record_round_trip_and_torch_weight(spec):
    from vqsearch.weights.finetune_model import QuantParam

    w = _tensor()
    enc = encode_tensor(w, spec, name="t", seed=3)
    sq = StoredQuantised.from_record("t", enc.meta, enc.arrays)
    arrays, meta = sq.record()
    assert meta == enc.meta
    assert set(arrays) == set(enc.arrays)
    for k in arrays:  # byte-identical layout
        assert arrays[k].dtype == enc.arrays[k].dtype and arrays[k].shape == enc.arrays[k].shape, k
        assert np.array_equal(arrays[k], enc.arrays[k]), k
    ref = decode_tensor(enc.arrays, enc.meta)
    qp = QuantParam(sq)
    assert np.allclose(qp.weight().detach().numpy(), ref, atol=1e-5 * np.abs(ref).max())
    ids = torch.tensor([3, 0, 47])
    assert np.allclose(qp.rows(ids).detach().numpy(), ref[[3, 0, 47]], atol=1e-5 * np.abs(ref).max())
    # re-encoding the current values reproduces them (each quantiser finds its own codeword; greedy
    # residual stages (E8P at 4 bits) may pick another nearby codeword)
    tiles = np.arange(sq.n_tiles)
    _, vals = sq.reencode(sq.normalised(), tiles)
    u = sq.tiles_of(sq.normalised())
    if "bits=4" in spec:
        assert np.mean((vals - u) ** 2) < 0.01
    else:
        assert np.allclose(vals, u, atol=1e-5)


def test_from_record_rejects_float_records():
    enc = encode_tensor(_tensor(), "float16")
    with pytest.raises(InvalidInput, match="not a quantised format"):
        StoredQuantised.from_record("t", enc.meta, enc.arrays)


@pytest.mark.parametrize("spec", ["e8p:bits=2", "int:bits=2,rht=true,block=0", "trellis:bits=2,L=8"])
def test_code_steps_lower_a_weighted_loss(spec):
    """The V step on its own: codes move towards the minimiser of tr((W − W₀) H (W − W₀)ᵀ) for an
    anisotropic H, starting from nearest rounding (which ignores H); scales stay fixed."""
    from vqsearch.weights.finetune import pv_round
    from vqsearch.weights.finetune_model import QuantParam

    rng = np.random.default_rng(0)
    w0 = _tensor((32, 64))
    a = rng.standard_normal((64, 64)) * np.linspace(0.1, 3, 64)
    h = torch.from_numpy((a @ a.T / 64).astype(np.float32))
    enc = encode_tensor(w0, spec, name="w", seed=1)
    qp = QuantParam(StoredQuantised.from_record("w", enc.meta, enc.arrays))
    target = torch.from_numpy(w0)

    def loss():
        e = qp.weight() - target
        return (e @ h * e).sum()

    def evaluate():
        with torch.no_grad():
            return float(loss())

    before = evaluate()
    changed, eta, trace = 0, 1.0, [before]
    for _ in range(12):
        qp.u.requires_grad_(True)
        qp.u.grad = None
        loss().backward()
        g = qp.u.grad.numpy().copy()
        n, kept = pv_round([(qp, g, g * g)], eta, 0.05, evaluate)
        eta = eta * 1.25 if kept else eta * 0.5
        changed += n
        trace.append(evaluate())
    after = evaluate()
    assert all(b <= a for a, b in zip(trace, trace[1:]))  # a rejected step leaves the codes as they were
    assert changed > 0
    assert after < 0.97 * before, (before, after)
    # the codes are still valid codes of the same format: the stored record decodes to what torch computes
    arrays, meta = qp.sq.record()
    assert np.allclose(decode_tensor(arrays, meta), qp.weight().detach().numpy(), atol=1e-5)
    assert {k: v.shape for k, v in arrays.items()} == {k: v.shape for k, v in enc.arrays.items()}


def test_options_validation():
    assert FinetuneOptions.of(True) == FinetuneOptions()
    assert FinetuneOptions.of({"e2e_steps": 5}).e2e_steps == 5
    with pytest.raises(InvalidSpec, match="unknown fine-tuning option"):
        FinetuneOptions.of({"steps": 5})
    with pytest.raises(InvalidSpec, match="finetune must be"):
        FinetuneOptions.of("yes")
    with pytest.raises(InvalidSpec, match="code_fraction"):
        FinetuneOptions(code_fraction=2).validate()


# ----------------------------------------------------------------------------- whole runs
pytest.importorskip("transformers")
TINY_OPTS = {"embed_steps": 3, "block_steps": 4, "e2e_steps": 8, "batch_size": 4, "max_seq_length": 32,
             "code_every": 2, "code_fraction": 0.05, "time_budget": 3600}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from vqtest_tinylm import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny"), layers=3)


def _compress(tiny, out, **kw):
    from vqtest_tinylm import TEXTS

    from vqsearch import weights

    return weights.compress(tiny / "model.safetensors", out, format="e8p:bits=2", calibration=TEXTS,
                            small_tensor=1024, calibration_options={"max_seq_length": 32, "batch_size": 4},
                            progress=False, **kw)


def _shard_hashes(folder):
    return [s["sha256"] for s in json.loads((folder / "manifest.json").read_text())["shards"]]


@pytest.mark.models
@pytest.mark.slow  # six compressions, five of them fine-tuned: about a minute of CPU on its own
def test_finetune_keeps_layout_is_deterministic_and_resumes(tiny, tmp_path, monkeypatch):
    from vqsearch.weights import finetune

    plain = _compress(tiny, tmp_path / "plain")
    a = _compress(tiny, tmp_path / "a", finetune=TINY_OPTS)
    # same formats, same bits (codes, scales and float16 leftovers keep their layout)
    assert [(t.name, t.format, t.bits, t.shape) for t in plain.tensors] == \
        [(t.name, t.format, t.bits, t.shape) for t in a.tensors]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["config"]["finetune"]["e2e_steps"] == 8
    assert not (tmp_path / "a" / finetune.WORK_DIR).exists()
    stages = manifest["finetune"]["stages"]
    assert manifest["finetune"]["truncated_by_time_budget"] is False  # else the run is not reproducible
    assert [s["stage"] for s in stages] == ["embeddings", "block.0", "block.1", "block.2", "end-to-end"]
    assert all(s["loss_after"] <= s["loss_before"] for s in stages)
    assert stages[-1]["loss_after"] < stages[-1]["loss_before"]
    # deterministic given the seed
    b = _compress(tiny, tmp_path / "b", finetune=TINY_OPTS)
    assert _shard_hashes(tmp_path / "a") == _shard_hashes(tmp_path / "b")
    assert b.total_bits == a.total_bits
    # the same job again is a no-op
    again = _compress(tiny, tmp_path / "a", finetune=TINY_OPTS)
    assert _shard_hashes(tmp_path / "a") == _shard_hashes(tmp_path / "b") and again.total_bits == a.total_bits
    # interrupted in the middle of block.1: the next run resumes after block.0 and ends identical
    real_train = finetune.Tuner._train
    calls = []

    def failing(self, stage, *args, **kwargs):
        calls.append(stage)
        if stage == "block.1":
            raise KeyboardInterrupt
        return real_train(self, stage, *args, **kwargs)

    monkeypatch.setattr(finetune.Tuner, "_train", failing)
    with pytest.raises(KeyboardInterrupt):
        _compress(tiny, tmp_path / "c", finetune=TINY_OPTS)
    assert (tmp_path / "c" / finetune.WORK_DIR / finetune.CHECKPOINT).exists()
    assert not (tmp_path / "c" / "manifest.json").exists()
    calls.clear()
    monkeypatch.setattr(finetune.Tuner, "_train", real_train)
    resumed_stages = []
    monkeypatch.setattr(finetune.Tuner, "_train",
                        lambda self, stage, *a, **k: resumed_stages.append(stage) or real_train(self, stage, *a, **k))
    _compress(tiny, tmp_path / "c", finetune=TINY_OPTS)
    assert resumed_stages == ["block.1", "block.2", "end-to-end"]
    assert _shard_hashes(tmp_path / "c") == _shard_hashes(tmp_path / "a")


@pytest.mark.models
def test_finetune_needs_texts_and_rejects_other_jobs(tiny, tmp_path):
    from vqsearch import weights
    from vqsearch.errors import Conflict

    with pytest.raises(InvalidInput, match="calibration texts"):
        weights.compress(tiny / "model.safetensors", tmp_path / "x", format="e8p:bits=2", finetune=True,
                         progress=False)
    _compress(tiny, tmp_path / "a", finetune=TINY_OPTS)
    with pytest.raises(Conflict, match="different compressed model"):
        _compress(tiny, tmp_path / "a", finetune={**TINY_OPTS, "seed": 1})


@pytest.mark.models
@pytest.mark.slow
def test_finetune_minilm_improves_held_out_cosine(tmp_path):
    """MiniLM at 2 bits: fine-tuned on stdlib docstrings, measured on other docstrings (never seen)."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    from vqsearch import weights
    from vqsearch.corpus import python_docstrings
    from vqsearch.embed import model_dir

    texts = [t for _, t in python_docstrings() if len(t) > 40]
    calib, held = texts[0:3000:60], texts[31:3000:25]  # disjoint (odd offsets never meet multiples of 60)
    folder = model_dir()
    model = SentenceTransformer(str(folder), device="cpu")
    model.max_seq_length = 64
    ref = model.encode(held, normalize_embeddings=True)
    auto = model[0].auto_model
    opts = {"embed_steps": 10, "block_steps": 15, "e2e_steps": 40, "code_every": 10, "max_seq_length": 64,
            "time_budget": 3600}  # never cut short: a loaded machine would skip steps and test nothing
    cos = {}
    for tag, ft in (("rounded", False), ("tuned", opts)):
        out = tmp_path / tag
        weights.compress(folder / "model.safetensors", out, format="e8p:bits=2", calibration=calib,
                         calibration_options={"max_seq_length": 64}, finetune=ft, progress=False)
        archive = weights.load(out)
        auto.load_state_dict({k: torch.from_numpy(np.array(archive[k])) for k in archive}, strict=False)
        cos[tag] = float(np.mean(np.sum(model.encode(held, normalize_embeddings=True) * ref, axis=1)))
    assert cos["tuned"] > cos["rounded"] + 0.01, cos
