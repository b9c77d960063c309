"""Small filesystem helpers for durable commits (fsync, atomic replace, checksums).

The commit protocol relies on POSIX semantics: ``os.replace`` is atomic within a
directory, and a new directory entry is durable only once the directory itself
has been fsync'd.  Everything here is synchronous and raises ``OSError``.
"""

from __future__ import annotations

import os
import uuid
import zlib
from collections.abc import Iterable
from pathlib import Path

TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    """Make the directory entries of ``path`` (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_name(directory: Path, final_name: str) -> Path:
    """A unique temporary path next to ``final_name`` (same filesystem, so rename is atomic)."""
    return directory / f"{TMP_PREFIX}{uuid.uuid4().hex}-{final_name}"


def write_file_durable(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (which must not be visible to readers yet) and fsync it."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    """Publish ``data`` at ``path`` atomically: temp file, fsync, rename, fsync directory.

    A reader sees either no file (or the old one) or the complete new file, never a
    prefix.  With ``overwrite=False`` an existing ``path`` raises ``FileExistsError``
    (checked just before the rename; callers hold the writer lock).
    """
    tmp = tmp_name(path.parent, path.name)
    try:
        write_file_durable(tmp, data)
        if not overwrite and path.exists():
            raise FileExistsError(f"{path} already exists")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def crc32_buffers(buffers: Iterable[object]) -> int:
    """CRC-32 over a sequence of buffer-protocol objects (``None`` entries are skipped).

    zlib's CRC-32 runs at ~6 GB/s on this class of machine, so checksumming a column is
    dominated by faulting its pages in, which is why verification is lazy (per column,
    at first use) rather than at open.
    """
    crc = 0
    for buf in buffers:
        if buf is not None:
            crc = zlib.crc32(buf, crc)
    return crc
