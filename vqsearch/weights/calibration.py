"""Calibration statistics from running texts through the model (needs the ``models`` extra: torch).

Calibration texts run in small padded batches; the attention mask removes padded positions from
every statistic (quantizers.md §11: unmasked pad activations dominate H):

* **input covariance** of every ``nn.Linear``: H = E[x xᵀ] over the text's tokens, accumulated in
  float64 (the proxy Hessian of Hessian-aware rounding, :mod:`.ldlq`);
* **Fisher information** (diagonal, summed per tensor) from squared per-text gradients, as in
  Orr et al. (quantizers.md §7.3).  A sentence-embedding model has no output distribution to
  sample labels from, so the output is modelled as Gaussian around the normalised embedding e(x):
  with a random probe ε ~ N(0, I), the gradient of ⟨ε, e(x)⟩ is Jᵀε and E[(Jᵀε)²] = diag(JᵀJ), the
  Fisher of that model.  It measures exactly what the acceptance metric sees: a weight error δ
  moves the embedding by ‖J δ‖² ≈ 2(1 − cos).  With independent probes per text, the squared
  gradient of a whole batch estimates the sum of the per-text Fishers without bias (cross terms
  have zero mean), so one backward pass serves a batch.  ``probes`` passes reduce the variance.
  Per-row sums are kept too (for the embedding table they are token-frequency weighted).

torch and sentence-transformers are imported lazily; without them :class:`MissingDependency` is
raised with the install hint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InvalidInput, MissingDependency

log = logging.getLogger(__name__)
_HINT = 'install the models extra: pip install "vqsearch[models]"'


@dataclass
class CalibrationStats:
    """What calibration measured, keyed by the weight tensor's name (``<module>.weight``)."""

    hessians: dict[str, np.ndarray] = field(default_factory=dict)
    #: Σ over texts and probes of the squared gradient, summed over the tensor's elements.
    fisher_sum: dict[str, float] = field(default_factory=dict)
    #: The same, per row of 2-D tensors.
    fisher_rows: dict[str, np.ndarray] = field(default_factory=dict)
    numel: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    tokens: int = 0
    fingerprint: str = ""

    def fisher_mean(self, name: str) -> float | None:
        """F̄_t: mean squared gradient per element and per sample (None when not measured)."""
        if name not in self.fisher_sum or self.samples == 0:
            return None
        return self.fisher_sum[name] / (self.numel[name] * self.samples)

    def hessian(self, name: str) -> np.ndarray | None:
        return self.hessians.get(name)


def import_models():
    """``(torch, SentenceTransformer)``, or ``MissingDependency`` naming the models extra."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
    except ImportError:
        raise MissingDependency(f"torch is needed for calibration; {_HINT}") from None
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise MissingDependency(f"sentence-transformers is needed for calibration; {_HINT}") from None
    return torch, SentenceTransformer


def fingerprint(folder: str | os.PathLike, texts: Sequence[str], **options: object) -> str:
    """Stable id of a calibration run (model files, texts, options), for resuming and caching."""
    h = hashlib.sha256()
    for f in sorted(Path(folder).glob("*.safetensors")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    h.update(json.dumps({"texts": list(texts), **options}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def collect(
    folder: str | os.PathLike,
    texts: Sequence[str],
    *,
    max_seq_length: int = 128,
    probes: int = 1,
    batch_size: int = 16,
    fisher: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> CalibrationStats:
    """Run ``texts`` through the sentence-transformers model in ``folder`` and collect statistics.

    Parameters
    ----------
    folder : path
        The sentence-transformers model folder (the one holding ``model.safetensors``).
    texts : sequence of str
        Calibration texts (a few hundred suffice).
    max_seq_length : int, default 128
        Token limit per text (longer texts are truncated, as at inference).
    probes : int, default 1
        Random output probes per text for the Fisher estimate (each costs one backward pass).
    batch_size : int, default 16
        Texts per forward pass; padding is masked out of H and does not reach the gradients
        (padded positions are excluded from mean pooling and attention).
    fisher : bool, default True
        Collect squared gradients (False: only the input covariances, forward passes only).
    seed : int, default 0
        Seed of the probes.
    """
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise InvalidInput("calibration must be a non-empty list of non-empty strings")
    if probes < 1 or batch_size < 1:
        raise InvalidInput(f"probes and batch_size must be >= 1, got {probes}, {batch_size}")
    torch, SentenceTransformer = import_models()
    model = SentenceTransformer(str(folder), device="cpu")
    model.max_seq_length = int(max_seq_length)
    model.eval()
    auto = model[0].auto_model
    stats = CalibrationStats(fingerprint=fingerprint(folder, texts, max_seq_length=max_seq_length,
                                                     probes=probes, fisher=fisher, seed=seed,
                                                     batch_size=batch_size))
    acc: dict[str, object] = {}
    current_mask: list = [None]
    hooks = []

    shared: dict[tuple, object] = {}  # q, k and v see the same input tensor: compute xᵀx once

    def make_hook(wname: str):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            key = (x.data_ptr(), tuple(x.shape))
            if key not in shared:
                x = x[current_mask[0]] if x.ndim == 3 else x.reshape(-1, x.shape[-1])  # real tokens only
                # float32 product per batch (≤ a few thousand tokens), float64 across batches.
                shared[key] = (x.T @ x).double()
            xtx = shared[key]
            acc[wname] = acc[wname] + xtx if wname in acc else xtx.clone()

        return hook

    for mname, module in auto.named_modules():
        if isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(make_hook(f"{mname}.weight")))
    params = {n: p for n, p in auto.named_parameters() if p.requires_grad}
    fsum = {n: 0.0 for n in params}
    frows = {n: torch.zeros(p.shape[0], dtype=torch.float64) for n, p in params.items() if p.ndim == 2}
    gen = torch.Generator().manual_seed(int(seed))
    batches = [list(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
    iterator = batches
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, desc="calibration", unit="batch")
    prep = getattr(model, "preprocess", None) or model.tokenize
    try:
        for batch in iterator:
            features = prep(batch)
            shared.clear()
            current_mask[0] = features["attention_mask"].bool()
            stats.tokens += int(current_mask[0].sum())
            if not fisher:
                with torch.no_grad():
                    model(features)
                continue
            emb = model(features)["sentence_embedding"]
            for p_i in range(probes):
                auto.zero_grad(set_to_none=True)
                # Independent probes per text: cross terms vanish in expectation, so the square of the
                # batch gradient estimates the sum of the per-text Fishers (module docstring).
                eps = torch.randn(emb.shape, generator=gen, dtype=emb.dtype)
                (emb * eps).sum().backward(retain_graph=p_i + 1 < probes)
                with torch.no_grad():
                    for n, p in params.items():
                        if p.grad is None:
                            continue
                        g2 = p.grad.pow(2)
                        if n in frows:
                            rows = g2.sum(dim=1, dtype=torch.float64)
                            frows[n] += rows
                            fsum[n] += float(rows.sum())
                        else:
                            fsum[n] += float(g2.sum(dtype=torch.float64))
    finally:
        for h in hooks:
            h.remove()
        auto.zero_grad(set_to_none=True)
    stats.samples = len(texts) * probes if fisher else 0
    for name, h in acc.items():
        stats.hessians[name] = (h / max(stats.tokens, 1)).numpy()
    for n, p in params.items():
        stats.numel[n] = int(p.numel())
        if fisher:
            stats.fisher_sum[n] = float(fsum[n])
            if n in frows:
                stats.fisher_rows[n] = frows[n].numpy()
    log.info("calibration: %d texts, %d tokens, %d linear layers", len(texts), stats.tokens, len(stats.hessians))
    return stats
