"""Text embedders a collection can be created with (``"embedder": "minilm"``).

An embedder factory returns an object with ``name``, ``dim`` and ``encode(texts) ->
float32 (n, dim)``.  Factories check their optional dependencies and raise
:class:`~vqsearch.errors.MissingDependency` (HTTP 400) when they are absent, so a
collection cannot be created with an embedder that cannot run.  The model itself is
loaded lazily, on the first text that needs embedding.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np

from ..errors import MissingDependency


class Embedder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


EmbedderFactory = Callable[[], Embedder]


def minilm() -> Embedder:
    """The offline all-MiniLM-L6-v2 embedder (384-d, unit norm) from the ``models`` extra."""
    from ..embed import default_embedder, model_dir

    model_dir()  # raises MissingDependency when the packaged model is absent
    if importlib.util.find_spec("sentence_transformers") is None:
        raise MissingDependency('sentence-transformers is not installed; install the models extra: '
                                'pip install "vqsearch[models]"')
    return default_embedder()


DEFAULT_EMBEDDERS: Mapping[str, EmbedderFactory] = {"minilm": minilm}
