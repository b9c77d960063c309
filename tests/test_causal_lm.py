"""Decoder-only models: calibration through transformers causal LMs, compression, ``load_transformers``.

A small randomly initialised Llama (tied embeddings) with a locally trained tokenizer is compressed
against the original float model; logits must stay within 2 % relative RMS at 8 bits and 15 % at
4 bits, and ``generate`` must run on the loaded model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.models

from vqtest_tinylm import TEXTS, make_tiny_llama  # noqa: E402

from vqsearch import weights  # noqa: E402
from vqsearch.errors import NotFound  # noqa: E402
from vqsearch.weights.causal_lm import collect_causal, load_transformers, model_kind  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tinyllama"))


def _logits(model, tok_folder) -> np.ndarray:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_folder))
    enc = tok(TEXTS[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc).logits
    return out[enc["attention_mask"].bool()].numpy()


def _float_model(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def _rel_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


def test_model_kind(tiny, tmp_path):
    assert model_kind(tiny) == "causal-lm"
    assert model_kind(tmp_path) == "unknown"


def test_collect_causal_statistics(tiny):
    stats = collect_causal(tiny, TEXTS, max_seq_length=32, batch_size=4)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert stats.hessians[q].shape == (64, 64)
    assert np.allclose(stats.hessians[q], stats.hessians[q].T, atol=1e-6)
    assert np.all(np.linalg.eigvalsh(stats.hessians[q]) > -1e-6)
    # q, k and v read the same normalised input: one covariance
    assert np.allclose(stats.hessians[q], stats.hessians["model.layers.0.self_attn.k_proj.weight"])
    # the tied table gets Fisher information (from the lookup and from the output head), one entry
    assert stats.fisher_mean("model.embed_tokens.weight") > 0
    assert "lm_head.weight" not in stats.fisher_sum
    assert stats.tokens > len(TEXTS)


@pytest.mark.parametrize(("spec", "limit"), [("int:bits=8,rht=true,block=0", 0.02), ("e8p:bits=4", 0.15)])
def test_round_trip_logits(tiny, tmp_path, spec, limit):
    out = tmp_path / "c"
    res = weights.compress(tiny / "model.safetensors", out, format=spec, calibration=TEXTS, small_tensor=1024,
                           calibration_options={"max_seq_length": 32, "batch_size": 4}, progress=False)
    assert "lm_head.weight" not in {t.name for t in res.tensors}  # tied: stored once
    assert any(t.format.startswith(spec.split(":")[0]) for t in res.tensors)
    model = load_transformers(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # re-tied
    ref = _logits(_float_model(tiny), tiny)
    got = _logits(model, tiny)
    err = _rel_rms(got, ref)
    assert err < limit, f"{spec}: relative RMS of logits {err:.4f}"
    assert err > 0  # the compression did something
    ids = torch.tensor([[1, 5, 9, 12]])
    gen = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=3)
    assert gen.shape == (1, 10)
    assert torch.equal(gen[:, :4], ids)


def test_load_transformers_needs_config(tiny, tmp_path):
    out = tmp_path / "c"
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.safetensors").write_bytes((tiny / "model.safetensors").read_bytes())
    weights.compress(src / "model.safetensors", out, format="int8", progress=False)
    with pytest.raises(NotFound, match="config.json"):
        load_transformers(out)
    model = load_transformers(out, config=tiny)
    assert model.config.num_hidden_layers == 2


def test_finetune_causal_lm_lowers_kl(tiny, tmp_path):
    """Fine-tuning through the causal-LM adapter: per-stage losses reported, end-to-end KL not worse."""
    out = tmp_path / "ft"
    opts = {"embed_steps": 4, "block_steps": 6, "e2e_steps": 12, "batch_size": 4, "max_seq_length": 32,
            "code_every": 3, "code_fraction": 0.05, "time_budget": 3600}
    res = weights.compress(tiny / "model.safetensors", out, format="e8p:bits=2", calibration=TEXTS,
                           small_tensor=1024, calibration_options={"max_seq_length": 32, "batch_size": 4},
                           finetune=opts, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    stages = manifest["finetune"]["stages"]
    assert [s["stage"] for s in stages] == ["embeddings", "block.0", "block.1", "end-to-end"]
    e2e = stages[-1]
    assert e2e["loss_after"] <= e2e["loss_before"] + 1e-9
    assert all(s["loss_after"] <= s["loss_before"] * 1.05 for s in stages)
    model = load_transformers(out)
    ref = _logits(_float_model(tiny), tiny)
    assert _rel_rms(_logits(model, tiny), ref) < 0.6
    assert res.bits_per_param < 8
