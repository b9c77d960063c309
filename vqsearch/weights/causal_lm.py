"""Decoder-only language models (Hugging Face transformers causal LMs) and the model adapters of fine-tuning.

* :func:`collect_causal` — calibration statistics of a causal LM (Llama / Qwen / GPT-2 layouts):
  input covariances H = E[x xᵀ] of every ``nn.Linear`` through forward hooks (real tokens only),
  and the diagonal Fisher information of the model's own next-token distribution (labels
  sampled from the model, the true Fisher rather than the empirical one), per tensor and per row.
  Tied input/output embeddings are one tensor in the file and get one set of statistics (the
  output head's gradient flows into the shared parameter).
* :func:`collect_any` — what ``compress(calibration=texts)`` calls: this module for causal LMs,
  :func:`vqsearch.weights.calibration.collect` for sentence-transformers folders.
* :func:`load_transformers` — a compressed causal LM as a ready ``transformers`` model.
* :func:`adapter_for` — how fine-tuning (:mod:`.finetune`) loads, tokenises and runs a model.

Needs the ``models`` extra (torch, transformers); imported lazily.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInput, MissingDependency, NotFound
from .calibration import CalibrationStats, fingerprint
from .manifest import FILES_DIR

log = logging.getLogger(__name__)
_HINT = 'install the models extra: pip install "vqsearch[models]"'


def _imports():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
        import transformers
    except ImportError:
        raise MissingDependency(f"torch and transformers are needed for causal language models; {_HINT}") from None
    return torch, transformers


def model_kind(folder: str | os.PathLike) -> str:
    """``"sentence-transformers"``, ``"causal-lm"`` or ``"unknown"`` for a model folder."""
    folder = Path(folder)
    if (folder / "modules.json").exists():
        return "sentence-transformers"
    cfg = folder / "config.json"
    if cfg.exists():
        try:
            arch = json.loads(cfg.read_text()).get("architectures") or []
        except (json.JSONDecodeError, UnicodeDecodeError):
            arch = []
        if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in arch):
            return "causal-lm"
    return "unknown"


def _load_causal(folder: Path):
    torch, transformers = _imports()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    tok.padding_side = "right"
    model.eval()
    return model, tok


def _batches(tok, texts: Sequence[str], batch_size: int, max_len: int) -> list[dict]:
    """Tokenised batches, texts sorted by length (less padding), deterministic."""
    lengths = [len(tok(t, truncation=True, max_length=max_len)["input_ids"]) for t in texts]
    order = np.argsort(lengths, kind="stable")
    out = []
    for i in range(0, len(order), batch_size):
        chunk = [texts[j] for j in order[i:i + batch_size]]
        enc = tok(chunk, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return out


def collect_causal(folder: str | os.PathLike, texts: Sequence[str], *, max_seq_length: int = 256,
                   batch_size: int = 8, probes: int = 1, fisher: bool = True, seed: int = 0,
                   progress: bool = False) -> CalibrationStats:
    """Calibration statistics of the causal LM in ``folder`` (see the module docstring)."""
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise InvalidInput("calibration must be a non-empty list of non-empty strings")
    if probes < 1 or batch_size < 1:
        raise InvalidInput(f"probes and batch_size must be >= 1, got {probes}, {batch_size}")
    torch, _ = _imports()
    model, tok = _load_causal(Path(folder))
    stats = CalibrationStats(fingerprint=fingerprint(folder, texts, max_seq_length=max_seq_length, probes=probes,
                                                     fisher=fisher, seed=seed, batch_size=batch_size, kind="causal"))
    acc: dict[str, Any] = {}
    mask: list = [None]
    shared: dict[tuple, Any] = {}
    hooks = []

    def make_hook(wname: str):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            key = (x.data_ptr(), tuple(x.shape))
            if key not in shared:
                xs = x[mask[0]] if x.ndim == 3 else x.reshape(-1, x.shape[-1])
                shared[key] = (xs.T @ xs).double()
            acc[wname] = acc[wname] + shared[key] if wname in acc else shared[key].clone()
        return hook

    for mname, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(make_hook(f"{mname}.weight")))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}  # tied weights appear once
    fsum = {n: 0.0 for n in params}
    frows = {n: torch.zeros(p.shape[0], dtype=torch.float64) for n, p in params.items() if p.ndim == 2}
    gen = torch.Generator().manual_seed(int(seed))
    batches = _batches(tok, list(texts), batch_size, max_seq_length)
    iterator: Any = batches
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, desc="calibration", unit="batch")
    try:
        for b in iterator:
            shared.clear()
            mask[0] = b["attention_mask"].bool()
            stats.tokens += int(mask[0].sum())
            if not fisher:
                with torch.no_grad():
                    model(**b, use_cache=False)
                continue
            logits = model(**b, use_cache=False).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            for p_i in range(probes):
                model.zero_grad(set_to_none=True)
                # Labels drawn from the model's own distribution: E[∇ log p(y)²] is the Fisher's diagonal.
                y = torch.multinomial(logp.detach().exp().reshape(-1, logp.shape[-1]), 1, generator=gen)
                picked = logp.reshape(-1, logp.shape[-1]).gather(1, y).reshape(mask[0].shape)
                (picked * mask[0]).sum().backward(retain_graph=p_i + 1 < probes)
                with torch.no_grad():
                    for n, p in params.items():
                        if p.grad is None:
                            continue
                        g2 = p.grad.pow(2)
                        if n in frows:
                            rows = g2.reshape(g2.shape[0], -1).sum(dim=1, dtype=torch.float64)
                            frows[n] += rows
                            fsum[n] += float(rows.sum())
                        else:
                            fsum[n] += float(g2.sum(dtype=torch.float64))
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
    stats.samples = len(texts) * probes if fisher else 0
    for name, h in acc.items():
        stats.hessians[name] = (h / max(stats.tokens, 1)).numpy()
    for n, p in params.items():
        stats.numel[n] = int(p.numel())
        if fisher:
            stats.fisher_sum[n] = float(fsum[n])
            if n in frows:
                stats.fisher_rows[n] = frows[n].numpy()
    log.info("calibration (causal LM): %d texts, %d tokens, %d linear layers", len(texts), stats.tokens,
             len(stats.hessians))
    return stats


def collect_any(folder: str | os.PathLike, texts: Sequence[str], **options: Any) -> CalibrationStats:
    """Calibration statistics for a sentence-transformers folder or a causal LM folder."""
    if model_kind(folder) == "causal-lm":
        return collect_causal(folder, texts, **options)
    from .calibration import collect

    return collect(folder, texts, **options)


def load_transformers(path: str | os.PathLike, *, config: str | os.PathLike | None = None, dtype: str = "float32"):
    """A compressed causal LM (or any ``AutoModel`` layout) as a ready ``transformers`` model.

    ``path`` is a compressed model directory or URL (:func:`vqsearch.weights.load`).  The architecture
    comes from ``config`` (a folder or file) if given, else from the ``config.json`` that ``compress``
    copied into the model (``files/``), else from the folder of the source a version-1 manifest names.
    Tensors are decoded once (:func:`vqsearch.weights.load`) into the model; tied weights are re-tied.
    """
    torch, transformers = _imports()
    from .archive import load

    archive = load(path)
    try:
        with tempfile.TemporaryDirectory(prefix="vqsearch-lm-") as tmp:
            cfg_dir = _config_folder(archive, config, Path(tmp))
            if cfg_dir is None:
                raise NotFound(f"no config.json for {path}: pass config= (the original model folder)")
            cfg = transformers.AutoConfig.from_pretrained(str(cfg_dir))
            kind = model_kind(cfg_dir)
        arch = (cfg.architectures or [""])[0]
        cls = getattr(transformers, arch, None) if arch else None
        if cls is None:
            cls = transformers.AutoModelForCausalLM if kind == "causal-lm" else transformers.AutoModel
            model = cls.from_config(cfg)
        else:
            model = cls(cfg)
        state = {k: torch.from_numpy(np.array(archive[k])) for k in archive}
    finally:
        archive.close()
    torch_dtype = getattr(torch, dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith(("lm_head.weight", "embed_out.weight"))}
    if set(missing) - tied:
        raise InvalidInput(f"compressed model lacks tensors {sorted(set(missing) - tied)[:5]} of {arch or 'the model'}")
    if unexpected:
        log.warning("load_transformers: %d stored tensors are not used by %s", len(unexpected), arch)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.to(torch_dtype).eval()


def _config_folder(archive: Any, config: str | os.PathLike | None, tmp: Path) -> Path | None:
    """A folder holding the model's ``config.json``: ``config`` (a folder or the file itself), else the copy
    ``compress`` stored with the model (``files/config.json``, copied into ``tmp``: a remote archive keeps
    its files under content hashes), else the folder of the source a version-1 manifest names."""
    if config is not None:
        f = Path(config)
        f = f if f.name == "config.json" else f / "config.json"
        return f.parent if f.exists() else None
    stored = f"{FILES_DIR}/config.json"
    if any(e.get("path") == stored for e in archive.files):
        shutil.copyfile(archive.file_path(stored), tmp / "config.json")
        return tmp
    legacy = archive.manifest.get("source", {}).get("path")
    if legacy and (Path(legacy).parent / "config.json").exists():
        return Path(legacy).parent
    return None


# ----------------------------------------------------------------------------- fine-tuning adapters
class SentenceAdapter:
    """sentence-transformers models: output = the (normalised) sentence embedding; loss 1 − cosine."""

    cache_targets = True

    def __init__(self, folder: Path, max_seq_length: int) -> None:
        self.folder, self.max_len = Path(folder), int(max_seq_length)
        self._tokenizer_model = None

    def load(self):
        from .calibration import import_models

        _, SentenceTransformer = import_models()
        model = SentenceTransformer(str(self.folder), device="cpu")
        model.max_seq_length = self.max_len
        self._tokenizer_model = model
        return model

    def param_root(self, model):
        return model[0].auto_model

    def batches(self, texts: Sequence[str], batch_size: int) -> list[dict]:
        st = self._tokenizer_model
        prep = getattr(st, "preprocess", None) or st.tokenize
        lengths = [int(prep([t])["attention_mask"].sum()) for t in texts]
        order = np.argsort(lengths, kind="stable")
        return [prep([texts[j] for j in order[i:i + batch_size]]) for i in range(0, len(order), batch_size)]

    def forward(self, model, batch):
        return model(dict(batch))["sentence_embedding"]

    def mask(self, batch):
        return batch["attention_mask"].bool()

    def e2e_loss(self, out, target, batch):
        import torch

        return (1 - torch.nn.functional.cosine_similarity(out, target, dim=-1)).mean()


class CausalAdapter:
    """Causal LMs: output = next-token logits; loss = KL(float ‖ compressed) per real token."""

    cache_targets = False

    def __init__(self, folder: Path, max_seq_length: int) -> None:
        self.folder, self.max_len = Path(folder), int(max_seq_length)
        self.tok = None

    def load(self):
        model, self.tok = _load_causal(self.folder)
        return model

    def param_root(self, model):
        return model

    def batches(self, texts: Sequence[str], batch_size: int) -> list[dict]:
        return _batches(self.tok, list(texts), batch_size, self.max_len)

    def forward(self, model, batch):
        return model(**batch, use_cache=False).logits

    def mask(self, batch):
        return batch["attention_mask"].bool()

    def e2e_loss(self, out, target, batch):
        import torch

        m = self.mask(batch)
        lp = torch.log_softmax(out[m].float(), dim=-1)
        lt = torch.log_softmax(target[m].float(), dim=-1)
        return (lt.exp() * (lt - lp)).sum(-1).mean()


def adapter_for(folder: str | os.PathLike, max_seq_length: int):
    kind = model_kind(folder)
    if kind == "sentence-transformers":
        return SentenceAdapter(Path(folder), max_seq_length)
    if kind == "causal-lm":
        return CausalAdapter(Path(folder), max_seq_length)
    raise InvalidInput(f"{folder} is neither a sentence-transformers folder (modules.json) nor a causal LM "
                       "(config.json with a *ForCausalLM architecture): cannot fine-tune it")
