"""Toy models for the weights tests: a small safetensors 'transformer' and a model folder around it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


def rel_mse(w: np.ndarray, w_hat: np.ndarray) -> float:
    w = np.asarray(w, dtype=np.float64)
    return float(np.mean((w - w_hat) ** 2) / np.mean(w**2))


def small_model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A toy 'transformer' file: two Gaussian linears (one with a Hadamard-less input dim), a
    heavy-tailed embedding, biases, a tiny matrix and an integer buffer."""
    return {
        "emb.weight": (rng.standard_t(4, size=(300, 64)) * 0.05).astype(np.float32),
        "l0.weight": (rng.standard_normal((128, 192)) * 0.02).astype(np.float32),
        "l0.bias": rng.standard_normal(128).astype(np.float32),
        "l1.weight": (rng.standard_normal((64, 100)) * 0.1).astype(np.float32),
        "tiny.weight": rng.standard_normal((4, 8)).astype(np.float32),
        "position_ids": np.arange(16, dtype=np.int64)[None, :],
    }


#: Non-weight files of a sentence-transformers folder, as compress should copy them.
MODEL_FILES = {
    "config.json": json.dumps({"model_type": "toy", "hidden_size": 64}),
    "tokenizer.json": json.dumps({"version": "1.0", "vocab": ["a", "b"]}),
    "vocab.txt": "[PAD]\n[UNK]\na\nb\n",
    "modules.json": json.dumps([{"idx": 0, "name": "0", "path": "", "type": "Transformer"},
                                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "Pooling"}]),
    "1_Pooling/config.json": json.dumps({"pooling_mode_mean_tokens": True}),
}


def model_folder(root: Path, rng: np.random.Generator) -> tuple[Path, dict[str, np.ndarray]]:
    """``root`` as a model folder: model.safetensors, :data:`MODEL_FILES`, and files compress must not copy."""
    root.mkdir(parents=True, exist_ok=True)
    tensors = small_model(rng)
    save_file(tensors, str(root / "model.safetensors"), metadata={"format": "pt"})
    for rel, text in MODEL_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "pytorch_model.bin").write_bytes(b"another export of the weights")
    (root / ".cache").mkdir()
    (root / ".cache" / "lock").write_text("x")
    (root / "unrelated_dir").mkdir()
    (root / "unrelated_dir" / "notes.txt").write_text("not a module folder")
    return root / "model.safetensors", tensors
