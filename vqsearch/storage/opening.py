"""Opening a version: read its manifest, verify its blobs and memory-map its files.

Readers take no lock, so a writer may commit a newer version and garbage-collect
the files of the one being opened.  A reader opening the *latest* version that finds
a file gone retries with the then-latest manifest (:class:`Vanished`); a reader of an
explicit version gets ``CorruptData`` or ``NotFound`` instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CorruptData, NotFound
from ._fsutil import TMP_PREFIX
from .blobs import OnCorrupt, SkippedFile, read_blobs
from .deletions import DeletionVector
from .manifest import BLOB_DIR, DELETION_DIR, MANIFEST_DIR, SEGMENT_DIR, list_versions, manifest_path, read_manifest
from .segment import Segment
from .snapshot import SegmentView, Snapshot

SUBDIRS = (MANIFEST_DIR, SEGMENT_DIR, DELETION_DIR, BLOB_DIR)


class Vanished(Exception):
    """A file of the version being opened disappeared (GC by a concurrent writer)."""


def load_version(root: Path, version: int | None, on_corrupt: OnCorrupt, *, racing: bool,
                 cache: dict[str, Segment] | None = None) -> tuple[Snapshot, list[SkippedFile], dict[str, Segment]]:
    """Read a manifest and open (memory-map) its files; see ``Store.open`` for ``on_corrupt``.

    ``racing``: the caller opens the latest version without the writer lock, so a vanished
    file means "a newer version exists" and raises :class:`Vanished` (the caller retries).
    ``cache`` maps segment files to already-open segments that may be reused.
    Returns the snapshot, the files skipped and the segments it holds open.
    """
    skipped: list[SkippedFile] = []
    versions = list_versions(root)
    if not versions:
        raise NotFound(f"no index at {root} (no manifest)")
    if version is not None:
        if version not in versions:
            raise NotFound(f"version {version} of {root} is not retained (retained: {versions})")
        m = read_manifest(root, version)
    else:
        m = None
        for v in reversed(versions):
            try:
                m = read_manifest(root, v)
                break
            except NotFound:
                if racing:  # removed by a concurrent writer's GC: list again
                    raise Vanished() from None
                continue
            except CorruptData as exc:
                if on_corrupt == "raise":
                    raise
                skipped.append(SkippedFile(f"{MANIFEST_DIR}/{manifest_path(root, v).name}", str(exc)))
        if m is None:
            raise CorruptData(f"no readable manifest in {root / MANIFEST_DIR}")
    try:
        blobs, bad = read_blobs(root, m, on_corrupt)
    except CorruptData:
        if racing and _superseded(root, m.version):
            raise Vanished() from None
        raise
    skipped += bad
    cache = dict(cache or {})
    views, kept, new_cache = [], [], {}
    for e in m.segments:
        try:
            seg = cache.get(e.file)
            if seg is None or seg.entry != e or seg.layout.code_columns != m.layout.code_columns:
                seg = Segment(root, e, m.layout)
            dv = None if e.deletion is None else DeletionVector(root, e.deletion, e)
            if on_corrupt == "skip":
                seg.verify_all()
                if dv is not None:
                    _ = dv.rows
        except CorruptData as exc:
            if racing and _superseded(root, m.version):
                raise Vanished() from None
            if on_corrupt == "raise":
                raise
            skipped.append(SkippedFile(e.file, str(exc)))
            continue
        new_cache[e.file] = seg
        kept.append(e)
        views.append(SegmentView(seg, dv, m.layout))
    if len(kept) != len(m.segments):
        m = m.evolve(segments=tuple(kept))
    return Snapshot(m, views, blobs), skipped, new_cache


def _superseded(root: Path, version: int) -> bool:
    versions = list_versions(root)
    return not versions or versions[-1] != version


def remove_temp_files(root: Path) -> None:
    """Remove temp files left by a crashed writer (only called with the writer lock held)."""
    for sub in SUBDIRS:
        d = root / sub
        if d.is_dir():
            for name in os.listdir(d):
                if name.startswith(TMP_PREFIX):
                    (d / name).unlink(missing_ok=True)
