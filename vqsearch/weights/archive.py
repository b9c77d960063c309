"""Reading a compressed model: a lazy mapping name → decoded ``np.ndarray``, local or over HTTP.

:func:`load` opens a model directory (:class:`WeightsArchive`, memory-mapped shards) or the URL of
a model served by ``vqsearch serve --models-dir`` (:class:`~.remote.RemoteArchive`, HTTP Range
requests and a disk cache).  Both decode the same stored records with the same code, so a tensor
is bit-for-bit the same either way.  :func:`update_tensors` rewrites tensors of a local model in
place, atomically (what a step after compression, such as fine-tuning, uses).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import CorruptData, InvalidInput, NotFound
from .codec import EncodedTensor, decode_tensor
from .manifest import read_manifest, write_manifest
from .shards import EOS, SCHEMA, ShardReader, ShardWriter, decode_record, encode_record, sha256, shard_index

#: Default bound of the shard files written by :func:`update_tensors` (as for ``compress``).
DEFAULT_SHARD_SIZE = 256 << 20


class Archive(Mapping[str, np.ndarray]):
    """What every compressed-model reader offers (the Mapping protocol plus records and files).

    Tensors are decoded on access (float32; integer buffers in their own dtype).  Each record's
    SHA-256 is checked the first time it is read (``verify``); a mismatch raises
    :class:`~vqsearch.errors.CorruptData` naming the shard.  With ``cache=True`` decoded arrays are
    kept (and returned read-only).  Safe to share between threads.
    """

    def __init__(self, manifest: dict[str, Any], label: str, *, cache: bool, verify: bool) -> None:
        self.manifest = manifest
        self.label = label
        self._entries = {t["name"]: t for t in manifest["tensors"]}
        self._cache_on = bool(cache)
        self._verify = bool(verify)
        self._cache: dict[str, np.ndarray] = {}
        self._verified: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ to implement
    def _record_bytes(self, name: str) -> np.ndarray:
        """The tensor's stored record (uint8), not yet verified."""
        raise NotImplementedError

    def file_path(self, rel: str) -> Path:
        """A local path holding the verified model file ``rel`` (a ``files`` entry of the manifest)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ Mapping protocol
    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._entries:
            raise KeyError(name)
        if self._cache_on and name in self._cache:
            return self._cache[name]
        meta, arrays = self.record(name)
        out = decode_tensor(arrays, meta)
        if out.dtype.kind == "f":
            out = np.ascontiguousarray(out, dtype=np.float32)
        if self._cache_on:
            out.flags.writeable = False
            with self._lock:
                self._cache[name] = out
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    # ------------------------------------------------------------------ records
    def entry(self, name: str) -> dict[str, Any]:
        """The manifest entry of ``name`` (raises ``NotFound``)."""
        if name not in self._entries:
            raise NotFound(f"tensor {name!r} is not in {self.label}")
        return self._entries[name]

    def raw_record(self, name: str) -> np.ndarray:
        """The tensor's Arrow record message bytes (read-only uint8), checked against its SHA-256."""
        e = self.entry(name)
        view = self._record_bytes(name)
        if self._verify and name not in self._verified:
            if sha256(view) != e["sha256"]:
                raise CorruptData(f"{self.label}/{e['shard']}: tensor {name!r} fails its SHA-256 checksum "
                                  "(corrupt shard)")
            with self._lock:
                self._verified.add(name)
        return view

    def record(self, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(record metadata, stored arrays) of ``name``: the codes, scales, ... as zero-copy views."""
        view = self.raw_record(name)
        return decode_record(pa.py_buffer(view), f"{self.label}/{self.entry(name)['shard']}")

    def record_stream(self, name: str) -> Iterator[bytes]:
        """The tensor's record as a standalone Arrow IPC stream (schema, record, end marker)."""
        view = self.raw_record(name)
        yield SCHEMA.serialize().to_pybytes()
        for i in range(0, view.size, 1 << 20):
            yield view[i:i + (1 << 20)].tobytes()
        yield EOS

    @property
    def files(self) -> list[dict[str, Any]]:
        """The model's configuration and tokenizer files (``path``, ``bytes``, ``sha256``)."""
        return list(self.manifest.get("files") or [])

    def file_entry(self, rel: str) -> dict[str, Any]:
        hit = next((f for f in self.files if f["path"] == rel), None)
        if hit is None:
            raise NotFound(f"{self.label} has no file {rel!r}")
        return hit

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        with self._lock:
            self._cache.clear()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WeightsArchive(Archive):
    """A compressed model directory: memory-mapped shards, records parsed on demand.

    ``label`` names the model in error messages (default: the directory path); the server passes
    the model's name so that its responses never reveal where models live on disk.
    """

    def __init__(self, root: str | os.PathLike, *, cache: bool = False, verify: bool = True,
                 label: str | None = None) -> None:
        self.root = Path(root)
        label = label or str(self.root)
        super().__init__(read_manifest(self.root, label), label, cache=cache, verify=verify)
        self._readers: dict[str, ShardReader] = {}
        self._shard_files = {s["file"] for s in self.manifest["shards"]}

    def shard(self, rel: str) -> ShardReader:
        """The memory-mapped shard ``rel`` (a ``shards`` entry of the manifest)."""
        with self._lock:
            if rel not in self._readers:
                if rel not in self._shard_files:
                    raise NotFound(f"shard {rel!r} is not part of {self.label}")
                self._readers[rel] = ShardReader(self.root / rel, f"{self.label}/{rel}")
            return self._readers[rel]

    def _record_bytes(self, name: str) -> np.ndarray:
        e = self.entry(name)
        return self.shard(e["shard"]).raw(int(e["offset"]), int(e["length"]))

    def file_path(self, rel: str) -> Path:
        entry = self.file_entry(rel)
        path = self.root / entry["path"]
        try:
            digest = sha256(path.read_bytes())
        except OSError:
            raise CorruptData(f"{self.label}/{rel}: model file is missing") from None
        if digest != entry["sha256"]:
            raise CorruptData(f"{self.label}/{rel}: model file fails its SHA-256 checksum")
        return path

    def close(self) -> None:
        super().close()
        with self._lock:
            self._readers.clear()


def load(path: str | os.PathLike, *, cache: bool = False, verify: bool = True, api_key: str | None = None,
         cache_dir: str | os.PathLike | None = None, timeout: float = 60.0) -> Archive:
    """Open a compressed model: a lazy mapping name → decoded ``np.ndarray``.

    ``path`` is a model directory (:class:`WeightsArchive`) or the URL of a served model,
    ``http(s)://host:port/v1/models/NAME`` (:class:`~.remote.RemoteArchive`: records fetched with
    HTTP Range requests when first read, verified by SHA-256 and kept in ``cache_dir``, default
    ``$VQSEARCH_CACHE_DIR`` or ``~/.cache/vqsearch``; ``api_key`` is sent as a bearer token).
    """
    text = os.fspath(path)
    if isinstance(text, str) and text.lower().startswith(("http://", "https://")):
        from .remote import RemoteArchive

        return RemoteArchive(text, api_key=api_key, cache_dir=cache_dir, cache=cache, verify=verify,
                             timeout=timeout)
    if api_key is not None:
        raise InvalidInput("api_key applies to model URLs only, not to a local directory")
    return WeightsArchive(path, cache=cache, verify=verify)


# ----------------------------------------------------------------------------- in-place updates
def update_tensors(
    path: str | os.PathLike,
    tensors: Mapping[str, EncodedTensor],
    *,
    info: Mapping[str, Mapping[str, Any]] | None = None,
    note: str = "",
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> dict[str, Any]:
    """Replace tensors of a compressed model directory in place, atomically; returns the new manifest.

    ``tensors`` maps names already in the model to their new stored form (e.g. the codes and
    scales of :func:`~.codec.encode_tensor`, changed by fine-tuning; shape and dtype must stay).
    ``info`` adds or overrides manifest fields per tensor (``sqnr_db``, ``stats`` ...); the old
    SQNR and statistics are dropped otherwise, since they described the old codes.

    The new records go to new shard files (existing shards are never modified) and are fsynced;
    then the manifest is replaced atomically, which is the commit point: a crash before it leaves
    the previous model intact.  Shards no longer referenced are deleted after the commit (readers
    that mapped them keep reading; on POSIX a deleted mapped file stays readable).

    Changing a tensor's continuous parameters (its block scales) and keeping its codes:

    >>> meta, arrays = weights.load(d).record(name)          # read-only views  # doctest: +SKIP
    >>> arrays = {k: v.copy() for k, v in arrays.items()}                        # doctest: +SKIP
    >>> arrays["scales"] = tuned.astype(arrays["scales"].dtype)                  # doctest: +SKIP
    >>> weights.update_tensors(d, {name: weights.EncodedTensor(arrays, meta)})   # doctest: +SKIP
    """
    root = Path(path)
    manifest = read_manifest(root)
    by_name = {t["name"]: t for t in manifest["tensors"]}
    for name, enc in tensors.items():
        if name not in by_name:
            raise NotFound(f"tensor {name!r} is not in {root}")
        if list(enc.meta.get("shape", [])) != list(by_name[name]["shape"]):
            raise InvalidInput(f"tensor {name!r}: new shape {enc.meta.get('shape')} differs from the stored "
                               f"{by_name[name]['shape']}")
    if not tensors:
        return manifest
    referenced = {s["file"] for s in manifest["shards"]}
    _remove_unreferenced_shards(root, referenced)  # leftovers of an update that crashed before its commit
    first = 1 + max((shard_index(f) for f in referenced), default=-1)
    writer = ShardWriter(root, shard_size, first_index=first)
    try:
        refs = {name: writer.write(name, encode_record(name, enc.arrays, enc.meta)) for name, enc in tensors.items()}
    except BaseException:
        writer.abort()
        raise
    new_shards = writer.close()
    extra = info or {}
    for name, enc in tensors.items():
        ref, t = refs[name], by_name[name]
        t.update(format=enc.meta["format"], params={k: v for k, v in enc.meta.items()
                                                    if k not in ("format", "shape", "dtype")},
                 shard=ref.shard, offset=ref.offset, length=ref.length, sha256=ref.sha256, bits=enc.bits,
                 bits_per_param=enc.bits_per_param, sqnr_db=None, stats=None, rounding=enc.meta.get("rounding"))
        t.update(dict(extra.get(name, {})))
    still = {t["shard"] for t in manifest["tensors"]}
    manifest["shards"] = [s for s in manifest["shards"] if s["file"] in still] + \
        [s for s in new_shards if s["file"] in still]
    total_bits = sum(int(t["bits"]) for t in manifest["tensors"])
    manifest["totals"].update(bits=total_bits, bits_per_param=total_bits / max(manifest["totals"]["params"], 1),
                              bytes_on_disk=sum(s["bytes"] for s in manifest["shards"]))
    manifest.setdefault("history", []).append({"action": "update", "time": time.time(), "tensors": len(tensors),
                                               "note": note})
    write_manifest(root, manifest)
    _remove_unreferenced_shards(root, {s["file"] for s in manifest["shards"]})
    return manifest


def _remove_unreferenced_shards(root: Path, referenced: set[str]) -> None:
    for p in sorted((root / "shards").glob("*.arrows")) if (root / "shards").is_dir() else []:
        if f"shards/{p.name}" not in referenced:
            p.unlink(missing_ok=True)
