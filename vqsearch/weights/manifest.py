"""The manifest of a compressed model (``manifest.json``), and the model files copied next to it.

The manifest is the commit point of a compressed model directory: it is written last and
replaced atomically (tmp file + fsync + rename + fsync of the directory), and everything it
references (shards, copied files) is durable before that.  Format version 2::

    {
      "format_version": 2,
      "created_by": "vqsearch 0.1.0",
      "source": {"files": [{"name": "model.safetensors", "bytes": 90868376, "sha256": "…"}],
                 "metadata": {"format": "pt"}},            # the safetensors __metadata__
      "config": {…},                                       # the job (plan, seed, damp, calibration id …)
      "shards": [{"file": "shards/00000.arrows", "bytes": …, "sha256": "…"}],
      "files":  [{"path": "files/config.json", "bytes": …, "sha256": "…"}],
      "tensors": [{"name": …, "shape": […], "dtype": "F32", "format": "<canonical spec>",
                   "params": {…record metadata: rows, cols, tile, rht_seed, rounding …},
                   "shard": "shards/00000.arrows", "offset": …, "length": …, "sha256": "…",
                   "bits": …, "bits_per_param": …, "sqnr_db": …, "stats": {…},
                   "rounding": "ldlq" | "nearest" | null, "seconds": …}],
      "allocation": {…} | null,
      "totals": {"params": …, "bits": …, "bits_per_param": …, "bytes_on_disk": …},
      "seconds": …,
      "history": [{"action": "compress" | "update", "tensors": …, "note": …}]
    }

Every path in it is relative to the model directory (and, when served, to the model's URL:
``GET /v1/models/{name}/{path}``); no absolute path is stored, so a manifest can be served
as is.  ``bytes_on_disk`` counts the shards only: the copied configuration and tokenizer files
are listed under ``files`` with their own sizes.  Version 1 manifests (which stored the source's
absolute path) are still read; :func:`public_manifest` drops that path before serving one.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import CorruptData, NotFound
from .shards import file_sha256

MANIFEST = "manifest.json"
MANIFEST_VERSION = 2
READABLE_VERSIONS = (1, 2)
FILES_DIR = "files"
#: Extensions of weight files, which are never copied as "model files" (the weights are in the shards).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".ot", ".gguf",
                    ".tflite", ".pb", ".npz", ".npy", ".arrows", ".index.json")
#: Larger files are not copied (tokenizers of big vocabularies stay well below this).
MAX_COPIED_FILE = 64 << 20


def write_manifest(root: Path, manifest: dict) -> None:
    """Atomically replace ``manifest.json`` (tmp + fsync + rename + fsync of the directory)."""
    root = Path(root)
    tmp = root / (MANIFEST + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / MANIFEST)
    fsync_dir(root)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - directories cannot be fsynced on some platforms
        pass


def parse_manifest(raw: bytes | str, where: str) -> dict:
    """Validate manifest JSON (from a file or an HTTP response); ``where`` names it in errors."""
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptData(f"{where}: manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") not in READABLE_VERSIONS \
            or not isinstance(manifest.get("tensors"), list) or not isinstance(manifest.get("shards"), list):
        raise CorruptData(f"{where}: not a vqsearch weights manifest (versions {READABLE_VERSIONS})")
    return manifest


def read_manifest(root: Path, label: str | None = None) -> dict:
    """The parsed manifest of the model directory ``root``; ``label`` names the model in errors (default: ``root``)."""
    path = Path(root) / MANIFEST
    name = label or str(root)
    if not path.exists():
        raise NotFound(f"no compressed model at {name} (missing {MANIFEST})")
    return parse_manifest(path.read_bytes(), f"{name}/{MANIFEST}")


def public_manifest(manifest: dict) -> dict:
    """A copy without anything that describes the machine it was made on (version-1 source paths)."""
    out = copy.deepcopy(manifest)
    if isinstance(out.get("source"), dict):
        out["source"].pop("path", None)
    if isinstance(out.get("config"), dict):
        out["config"].pop("source", None)
    return out


# ----------------------------------------------------------------------------- model files
def model_files(folder: Path) -> list[Path]:
    """The configuration and tokenizer files of a model folder, relative to it.

    Top-level regular files that are not weights, plus the module folders a sentence-transformers
    ``modules.json`` names (``1_Pooling/config.json`` …).  Hidden and oversized files are skipped.
    """
    folder = Path(folder)
    dirs: list[Path] = []
    modules = folder / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            entries = []
        for e in entries if isinstance(entries, list) else []:
            sub = e.get("path") if isinstance(e, dict) else None
            if isinstance(sub, str) and sub and not sub.startswith((".", "/")) and ".." not in Path(sub).parts \
                    and (folder / sub).is_dir():
                dirs.append(Path(sub))
    found = [p.relative_to(folder) for p in folder.iterdir() if p.is_file()]
    for d in dirs:
        found += [p.relative_to(folder) for p in (folder / d).rglob("*") if p.is_file()]
    out = []
    for rel in sorted(set(found)):
        if any(part.startswith(".") for part in rel.parts) or rel.name in (MANIFEST, "_journal.jsonl"):
            continue
        if len(rel.parts) == 1 and rel.name.endswith(_WEIGHT_SUFFIXES):
            continue  # the model's weights (compressed into the shards) or another export of them
        if (folder / rel).stat().st_size > MAX_COPIED_FILE:
            continue
        out.append(rel)
    return out


def copy_model_files(folder: Path, root: Path) -> list[dict[str, Any]]:
    """Copy :func:`model_files` of ``folder`` to ``root/files/`` (each atomically); returns their manifest entries."""
    entries = []
    for rel in model_files(folder):
        dst = Path(root) / FILES_DIR / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
        try:
            with os.fdopen(fd, "wb") as out, open(Path(folder) / rel, "rb") as src:
                shutil.copyfileobj(src, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        entries.append({"path": f"{FILES_DIR}/{rel.as_posix()}", "bytes": dst.stat().st_size,
                        "sha256": file_sha256(dst)})
    return entries
