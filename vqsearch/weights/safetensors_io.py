"""safetensors I/O: lazy reading of a model (the compression source) and streamed writing (decompress).

Reading: one ``*.safetensors`` file or a sharded ``*.safetensors.index.json``.  Only the JSON
headers are read up front (names, shapes, dtypes); each tensor's bytes are read when it is
requested, through the ``safetensors`` package with the numpy framework (which memory-maps the
file), so compressing a model never holds more than one tensor in memory.

Writing (:func:`decompress`): the header first (every tensor's dtype, shape and byte range are
known from the manifest), then one decoded tensor at a time, into a temporary file renamed into
place.  Only ``.safetensors`` outputs are written: another extension (``.gguf``, ``.bin`` ...)
is refused rather than silently given safetensors bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorruptData, InvalidInput, InvalidSpec, NotFound

if TYPE_CHECKING:
    from .archive import Archive

#: safetensors dtype tag → numpy dtype (bfloat16 has no numpy dtype: it is widened to float32).
_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": None,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
FLOAT_TAGS = ("F64", "F32", "F16", "BF16")


@dataclass(frozen=True)
class TensorEntry:
    """Header entry of one tensor: name, shape, safetensors dtype tag, and the file holding it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    file: Path

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_TAGS


def _read_header(path: Path) -> dict:
    """Parse a safetensors header (8-byte little-endian length, then JSON) without reading data."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise CorruptData(f"{path}: not a safetensors file (shorter than 8 bytes)")
            n = int.from_bytes(raw, "little")
            if n <= 0 or n > min(size - 8, 100 << 20):
                raise CorruptData(f"{path}: not a safetensors file (header length {n})")
            header = json.loads(fh.read(n))
    except FileNotFoundError:
        raise NotFound(f"safetensors file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptData(f"{path}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CorruptData(f"{path}: safetensors header is not a JSON object")
    return header


class SafetensorsSource:
    """Read-only view of a safetensors model: a single file, or the shards of an index.json.

    Parameters
    ----------
    path : str or Path
        ``model.safetensors``, ``model.safetensors.index.json``, or a folder holding one of them
        (the index wins when both exist).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        p = Path(path)
        if p.is_dir():
            idx = sorted(p.glob("*.safetensors.index.json"))
            files = sorted(p.glob("*.safetensors"))
            if idx:
                p = idx[0]
            elif len(files) == 1:
                p = files[0]
            else:
                raise NotFound(f"{path}: expected one *.safetensors file or an index.json, found {len(files)}")
        if not p.exists():
            raise NotFound(f"safetensors source not found: {p}")
        self.path = p
        self.metadata: dict[str, str] = {}
        self._entries: dict[str, TensorEntry] = {}
        if p.name.endswith(".index.json"):
            self._load_index(p)
        else:
            self._add_file(p)
        self._handles: dict[Path, object] = {}

    @property
    def folder(self) -> Path:
        """Folder of the model (for sentence-transformers / transformers configuration files)."""
        return self.path.parent

    def _load_index(self, p: Path) -> None:
        try:
            index = json.loads(p.read_text())
            weight_map = index["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CorruptData(f"{p}: not a safetensors index (needs a 'weight_map'): {exc}") from None
        for fname in sorted(set(weight_map.values())):
            self._add_file(p.parent / fname)
        missing = set(weight_map) - set(self._entries)
        if missing:
            raise CorruptData(f"{p}: {len(missing)} indexed tensors are missing from the shards "
                              f"(first: {sorted(missing)[0]!r})")

    def _add_file(self, f: Path) -> None:
        header = _read_header(f)
        meta = header.pop("__metadata__", None) or {}
        self.metadata.update({str(k): str(v) for k, v in meta.items()})
        for name, desc in header.items():
            try:
                dtype, shape = desc["dtype"], tuple(int(s) for s in desc["shape"])
            except (KeyError, TypeError, ValueError):
                raise CorruptData(f"{f}: malformed header entry for {name!r}") from None
            if dtype not in _DTYPES:
                raise InvalidInput(f"{f}: tensor {name!r} has unsupported dtype {dtype}")
            if name in self._entries:
                raise CorruptData(f"{f}: tensor {name!r} appears in two shards")
            self._entries[name] = TensorEntry(name, shape, dtype, f)

    # ------------------------------------------------------------------ mapping-like API
    def keys(self) -> list[str]:
        """Tensor names in file order."""
        return list(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> TensorEntry:
        if name not in self._entries:
            raise NotFound(f"tensor {name!r} is not in {self.path}")
        return self._entries[name]

    def entries(self) -> list[TensorEntry]:
        return list(self._entries.values())

    def _handle(self, f: Path):
        if f not in self._handles:
            from safetensors import safe_open

            self._handles[f] = safe_open(str(f), framework="np")
        return self._handles[f]

    def get(self, name: str) -> np.ndarray:
        """The tensor as a numpy array (bfloat16 widened to float32; other dtypes unchanged)."""
        e = self.entry(name)
        if e.dtype == "BF16":
            return self._read_bf16(e)
        try:
            return self._handle(e.file).get_tensor(name)
        except Exception as exc:  # safetensors raises its own error types for truncated data
            raise CorruptData(f"{e.file}: cannot read tensor {name!r}: {exc}") from None

    def _read_bf16(self, e: TensorEntry) -> np.ndarray:
        # numpy has no bfloat16: read the raw bytes and widen (bf16 is the top half of a float32).
        header = _read_header(e.file)
        with open(e.file, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
        start, end = header[e.name]["data_offsets"]
        raw = np.fromfile(e.file, dtype="<u2", count=(end - start) // 2, offset=8 + n + start)
        return (raw.astype(np.uint32) << 16).view(np.float32).reshape(e.shape)

    def close(self) -> None:
        self._handles.clear()

    def __enter__(self) -> SafetensorsSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def file_digests(self) -> list[dict[str, Any]]:
        """Name, size and SHA-256 of each source file (the identity of a compression job, without paths)."""
        out = []
        for f in sorted({e.file for e in self._entries.values()} | {self.path}):
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
            out.append({"name": f.name, "bytes": f.stat().st_size, "sha256": h.hexdigest()})
        return out


# ----------------------------------------------------------------------------- writing
_OUT_DTYPES = {"float16": ("F16", "<f2"), "float32": ("F32", "<f4"), "bfloat16": ("BF16", None)}


def decompress(path: str | os.PathLike, out: str | os.PathLike, dtype: str = "float32", *,
               api_key: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Write the decoded model as one safetensors file (streamed: one tensor in memory at a time).

    ``path`` is a compressed model directory or a served model's URL (``api_key`` and ``cache_dir``
    as for :func:`vqsearch.weights.load`).  ``out`` must end in ``.safetensors``.  ``dtype``
    ("float32", "float16" or "bfloat16") applies to floating-point tensors; integer buffers keep
    their dtype.  The source file's ``__metadata__`` (e.g. ``{"format": "pt"}``) is kept.
    """
    from .archive import load

    out = Path(out)
    if not out.name.endswith(".safetensors"):
        raise InvalidInput(f"decompress writes safetensors only: name the output *.safetensors, got {out.name!r} "
                           "(GGUF and other containers are not supported)")
    _check_dtype(dtype)
    archive = load(path, api_key=api_key, cache_dir=cache_dir)
    try:
        write_safetensors(archive, out, dtype)
    finally:
        archive.close()
    return out


def write_safetensors(archive: Archive, out: Path, dtype: str = "float32") -> None:
    """Write every tensor of an open archive (:func:`vqsearch.weights.load`) to ``out``, atomically."""
    _check_dtype(dtype)
    header: dict[str, Any] = {}
    meta = archive.manifest.get("source", {}).get("metadata") or {}
    if meta:
        header["__metadata__"] = {str(k): str(v) for k, v in meta.items()}
    offset = 0
    plan = []
    for t in archive.manifest["tensors"]:
        numel = int(np.prod(t["shape"], dtype=np.int64)) if t["shape"] else 1
        if t["format"] == "raw" and t["dtype"] not in FLOAT_TAGS:
            tag, size = t["dtype"], np.dtype(t["params"]["raw_dtype"]).itemsize
        else:
            tag, size = _OUT_DTYPES[dtype][0], 4 if dtype == "float32" else 2
        header[t["name"]] = {"dtype": tag, "shape": list(t["shape"]), "data_offsets": [offset, offset + numel * size]}
        plan.append((t["name"], tag))
        offset += numel * size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        for name, tag in plan:
            arr = archive[name]
            if tag == "BF16":
                fh.write(to_bfloat16(arr).tobytes())
            elif tag in ("F16", "F32"):
                fh.write(np.ascontiguousarray(arr, dtype=_OUT_DTYPES[dtype][1]).tobytes())
            else:
                fh.write(np.ascontiguousarray(arr).astype(np.dtype(arr.dtype).newbyteorder("<")).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)


def _check_dtype(dtype: str) -> None:
    if dtype not in _OUT_DTYPES:
        raise InvalidSpec(f"dtype must be one of {sorted(_OUT_DTYPES)}, got {dtype!r}")


def to_bfloat16(arr: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (little-endian uint16) of ``arr``: round to nearest even on the top 16 bits."""
    u = np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")
