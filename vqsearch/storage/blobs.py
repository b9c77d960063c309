"""Opaque blobs (fitted quantiser states): ``quantizers/<sha256>.bin``, shared across versions.

A blob is stored once under its content hash and referenced by hash from every manifest
that uses it, so re-committing unchanged states costs nothing and a version's blobs are
verified end to end (size and SHA-256) when the version is opened.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import CorruptData, InvalidInput
from ._fsutil import atomic_write
from .config import check_name
from .manifest import BlobEntry, Manifest

OnCorrupt = Literal["raise", "skip"]


@dataclass(frozen=True)
class SkippedFile:
    """A file left out by ``on_corrupt="skip"`` (or reported by :meth:`Store.verify`)."""

    file: str
    reason: str


def check_blobs(blobs: object) -> dict[str, bytes]:
    """Validate a ``name -> bytes`` mapping of blobs (names like code columns)."""
    if not isinstance(blobs, Mapping):
        raise InvalidInput(f"blobs must be a dict name -> bytes, got {type(blobs).__name__}")
    out = {}
    for k, v in blobs.items():
        check_name(k, "blob")
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"blob {k!r} must be bytes, got {type(v).__name__}")
        out[k] = bytes(v)
    return out


def write_blobs(root: Path, blobs: Mapping[str, bytes]) -> dict[str, BlobEntry]:
    """Store every blob durably (skipping those already on disk) and return their manifest entries."""
    out = {}
    for name, data in blobs.items():
        sha = hashlib.sha256(data).hexdigest()
        entry = BlobEntry(sha, len(data))
        path = root / entry.file
        if not (path.is_file() and path.stat().st_size == len(data)):
            atomic_write(path, data)
        out[name] = entry
    return out


def read_blobs(root: Path, m: Manifest, on_corrupt: OnCorrupt) -> tuple[dict[str, bytes], list[SkippedFile]]:
    """Read and verify the blobs of manifest ``m``; with ``on_corrupt="skip"`` bad ones are listed, not raised."""
    out, skipped = {}, []
    for name, entry in m.blobs.items():
        path = root / entry.file
        try:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise CorruptData(f"blob {path} is missing") from None
            if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
                raise CorruptData(f"blob {path} does not match its sha256 (truncated or corrupted)")
        except CorruptData as exc:
            if on_corrupt == "raise":
                raise
            skipped.append(SkippedFile(entry.file, str(exc)))
            continue
        out[name] = data
    return out, skipped
