"""A ready sentence-transformers model from a compressed model directory or URL (``models`` extra)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import MissingDependency, NotFound
from .archive import load
from .manifest import FILES_DIR
from .safetensors_io import write_safetensors

_HINT = 'install the models extra: pip install "vqsearch[models]"'


def load_sentence_transformer(path: str | os.PathLike, *, api_key: str | None = None,
                              cache_dir: str | os.PathLike | None = None, device: str = "cpu",
                              **kwargs: Any) -> Any:
    """Load a compressed model (directory or ``http(s)://…/v1/models/NAME``) as a ``SentenceTransformer``.

    The configuration and tokenizer files copied at compression time (``files/`` in the
    manifest) and the decoded float32 weights are laid out in a temporary folder that
    sentence-transformers loads from; the folder is removed afterwards.  ``api_key`` and
    ``cache_dir`` are as for :func:`vqsearch.weights.load`; other keyword arguments go to
    ``SentenceTransformer``.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise MissingDependency(f"sentence-transformers is needed to load the model; {_HINT}") from None
    archive = load(path, api_key=api_key, cache_dir=cache_dir)
    try:
        if not archive.files:
            raise NotFound(f"{archive.label} has no configuration or tokenizer files (it was compressed with "
                           "copy_files=False or by an older version); decompress it next to the original files")
        prefetch = getattr(archive, "prefetch", None)
        if prefetch is not None:
            prefetch()  # one request per shard instead of one per tensor
        with tempfile.TemporaryDirectory(prefix="vqsearch-st-") as tmp:
            folder = Path(tmp)
            for f in archive.files:
                rel = Path(f["path"]).relative_to(FILES_DIR)
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(archive.file_path(f["path"]), folder / rel)
            write_safetensors(archive, folder / "model.safetensors", "float32")
            return SentenceTransformer(str(folder), device=device, **kwargs)
    finally:
        archive.close()

