"""The commit protocol: how the single writer turns new files into a new version.

Every change (write, upsert, delete, metadata update, schema change, compaction,
config change) is one :class:`Transaction`:

1. new immutable files are written and fsync'd: segments (``segments/<uuid>.arrow``),
   cumulative deletion files (``deletions/<uuid>.arrow``) and blobs
   (``quantizers/<sha256>.bin``); nothing references them yet;
2. their directories are fsync'd;
3. the new manifest is written to a temp file, fsync'd, renamed to
   ``_manifests/%08d.json`` and the directory fsync'd: **the commit point**;
4. the writer swaps in the new :class:`Snapshot` and garbage-collects every file no
   retained manifest references.

A crash before step 3 leaves the previous version current; its orphan files are
removed by the next writer (temp files at open, unreferenced files at the next GC).
A failure raised inside a transaction unlinks the files it created.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptData, NotFound
from . import compaction
from ._fsutil import fsync_dir
from .batch import WriteBatch
from .blobs import write_blobs
from .config import Layout, StorePolicy
from .deletions import DeletionVector, write_deletion
from .manifest import (
    BLOB_DIR,
    DELETION_DIR,
    SEGMENT_DIR,
    Manifest,
    SegmentEntry,
    list_versions,
    manifest_path,
    read_manifest,
    write_manifest,
)
from .segment import Segment, write_segment
from .snapshot import SegmentView, Snapshot

log = logging.getLogger(__name__)


class Writer:
    """The writer's side of one store directory: its current version, open files and retained manifests.

    Not thread-safe by itself; :class:`~vqsearch.storage.Store` serialises calls with its mutex.
    """

    def __init__(self, root: Path, snapshot: Snapshot, *, policy: StorePolicy, next_version: int,
                 segments: dict[str, Segment]) -> None:
        self.root = root
        self.snapshot = snapshot
        self.policy = policy
        self.next_version = next_version
        self._segments = segments
        self._deletions: dict[str, DeletionVector] = {
            v.deletion.entry.file: v.deletion for v in snapshot.segments if v.deletion is not None}
        self._manifests: dict[int, Manifest] = {snapshot.version: snapshot.manifest}

    @contextlib.contextmanager
    def transaction(self, operation: str) -> Iterator[Transaction]:
        """A transaction on the current version; files it wrote are unlinked unless it commits."""
        tx = Transaction(self, operation)
        try:
            yield tx
        finally:
            if not tx.committed:
                tx.abort()

    def manifest(self, version: int) -> Manifest:
        """A retained manifest (cached; ``NotFound`` / ``CorruptData`` from disk)."""
        m = self._manifests.get(version)
        return m if m is not None else read_manifest(self.root, version)

    def publish(self, operation: str, changes: Mapping[str, Any], new_segments: list[Segment],
                new_deletions: list[DeletionVector], blob_bytes: Mapping[str, bytes] | None) -> Snapshot:
        """Write the next manifest (the commit point), swap in its snapshot and collect garbage."""
        old = self.snapshot
        m = old.manifest.evolve(version=self.next_version, timestamp=time.time(), operation=operation,
                                policy=self.policy, **changes)
        if new_segments:
            fsync_dir(self.root / SEGMENT_DIR)
        if new_deletions:
            fsync_dir(self.root / DELETION_DIR)
        write_manifest(self.root, m)  # <- commit point
        self.next_version = m.version + 1
        for s in new_segments:
            self._segments[s.file] = s
        for d in new_deletions:
            self._deletions[d.entry.file] = d
        views = []
        for e in m.segments:
            seg = self._segments[e.file]
            dv = None if e.deletion is None else self._deletions[e.deletion.file]
            views.append(SegmentView(seg, dv, m.layout))
        blobs = blob_bytes if blob_bytes is not None else old.blobs
        self.snapshot = Snapshot(m, views, blobs)
        live = {e.file for e in m.segments}
        self._segments = {k: v for k, v in self._segments.items() if k in live}
        live_dv = {e.deletion.file for e in m.segments if e.deletion is not None}
        self._deletions = {k: v for k, v in self._deletions.items() if k in live_dv}
        self._manifests[m.version] = m
        try:
            self.collect_garbage()
        except OSError as exc:  # the commit stands; the next commit collects what is left
            log.warning("garbage collection after version %d failed: %s", m.version, exc)
        return self.snapshot

    # ------------------------------------------------------------ compaction
    def compact(self, *, full: bool) -> bool:
        """Rewrite what the policy (or, with ``full``, everything mergeable) asks for; True if it committed."""
        if not full and not self.policy.auto_compact:
            return False
        p = compaction.plan(self.snapshot.manifest.segments, self.policy, full=full)
        if p.empty:
            return False
        snap = self.snapshot
        entries = snap.manifest.segments
        with self.transaction("compact") as tx:
            chunk = compaction.rows_per_output([entries[i] for i in p.rewrite], self.policy, snap.layout)
            new = tx.track(compaction.merge(self.root, [snap.segments[i] for i in p.rewrite], layout=snap.layout,
                                            version=self.next_version, chunk_rows=chunk,
                                            codecs=snap.manifest.codecs, blob_hashes=self.blob_hashes()))
            gone = set(p.rewrite) | set(p.drop)
            tx.segments = [e for i, e in enumerate(entries) if i not in gone] + [s.entry for s in new]
            tx.commit()
        log.info("compacted %d segment(s) (dropped %d) into %d", len(p.rewrite), len(p.drop), len(new))
        return True

    def blob_hashes(self) -> dict[str, str]:
        return {k: b.sha256 for k, b in self.snapshot.manifest.blobs.items()}

    # ------------------------------------------------------------ garbage collection
    def collect_garbage(self) -> None:
        """Drop manifests beyond retention, then every file no retained manifest references."""
        versions = list_versions(self.root)
        keep = set(versions[-self.policy.keep_versions:]) | {self.snapshot.version}
        for v in versions:
            if v not in keep:
                manifest_path(self.root, v).unlink(missing_ok=True)
                self._manifests.pop(v, None)
        referenced: set[str] = set()
        for v in sorted(keep):
            m = self._manifests.get(v)
            if m is None:
                try:
                    m = read_manifest(self.root, v)
                except NotFound:
                    continue
                except CorruptData as exc:  # unusable by anyone; its files are not protected
                    log.warning("ignoring corrupt manifest during GC: %s", exc)
                    continue
                self._manifests[v] = m
            referenced |= m.files()
        for sub in (SEGMENT_DIR, DELETION_DIR, BLOB_DIR):
            try:
                names = os.listdir(self.root / sub)
            except FileNotFoundError:
                continue
            for name in names:
                if f"{sub}/{name}" not in referenced:
                    (self.root / sub / name).unlink(missing_ok=True)


class Transaction:
    """One pending commit on top of the writer's current version (see module docstring).

    Mutate :attr:`segments` (the next manifest's segment list) through :meth:`add_rows`
    and :meth:`delete_rows`, record other manifest fields with :meth:`set`, then
    :meth:`commit`.  Files written here are unlinked if the transaction does not commit.
    """

    def __init__(self, writer: Writer, operation: str) -> None:
        self.writer = writer
        self.operation = operation
        self.base = writer.snapshot
        self.segments: list[SegmentEntry] = list(self.base.manifest.segments)
        self.committed = False
        self._changes: dict[str, Any] = {}
        self._created: list[Path] = []
        self._new_segments: list[Segment] = []
        self._new_deletions: list[DeletionVector] = []
        self._blob_bytes: Mapping[str, bytes] | None = None

    def track(self, segments: list[Segment]) -> list[Segment]:
        """Adopt segments written elsewhere (compaction) so they are published or unlinked with the transaction."""
        self._created.extend(s.path for s in segments)
        self._new_segments.extend(segments)
        return segments

    def add_rows(self, batch: WriteBatch) -> None:
        """Write the batch's rows as new segments (split at the policy's target size)."""
        n = batch.num_rows
        if n == 0:
            return
        layout = batch.layout
        meta_bytes = 0 if batch.metadata is None else batch.metadata.nbytes / n
        per = max(1, int(self.writer.policy.target_segment_bytes // (layout.row_bytes() + meta_bytes)))
        for start in range(0, n, per):
            sl = slice(start, min(n, start + per))
            seg = write_segment(
                self.writer.root, layout=layout, version=self.writer.next_version, ids=batch.ids[sl],
                columns={k: v[sl] for k, v in batch.columns.items()},
                vectors=None if batch.vectors is None else batch.vectors[sl],
                extra={k: v[sl] for k, v in batch.extra.items()},
                metadata=None if batch.metadata is None else batch.metadata.slice(sl.start, sl.stop - sl.start),
                codecs=self.base.manifest.codecs, blob_hashes=self.writer.blob_hashes())
            self.track([seg])
            self.segments.append(seg.entry)

    def delete_rows(self, seg_idx: np.ndarray, rows: np.ndarray) -> None:
        """Mark rows dead: ``seg_idx`` indexes the base snapshot's segments (-1 = skip), ``rows`` their rows.

        Writes one new cumulative deletion file per hit segment (old dead rows plus the new ones).
        """
        snap = self.base
        for i in np.unique(seg_idx[seg_idx >= 0]):
            i = int(i)
            view = snap.segments[i]
            entry = self.segments[i]
            if entry.file != view.name:
                raise RuntimeError("delete_rows must come before segments are reordered")
            all_rows = np.union1d(view.dead_rows, rows[seg_idx == i].astype(np.uint32)).astype(np.uint32)
            d = write_deletion(self.writer.root, all_rows, view.ids[all_rows], entry)
            self._created.append(self.writer.root / d.file)
            self.segments[i] = replace(entry, deletion=d)
            self._new_deletions.append(DeletionVector(self.writer.root, d, self.segments[i]))

    def set(self, *, layout: Layout | None = None, config: dict[str, Any] | None = None,
            blobs: Mapping[str, bytes] | None = None, codecs: dict[str, str] | None = None) -> None:
        """Replace manifest fields in this commit (``None`` = keep); blobs are written now."""
        if layout is not None:
            self._changes["layout"] = layout
        if config is not None:
            self._changes["config"] = config
        if codecs is not None:
            self._changes["codecs"] = codecs
        if blobs is not None:
            self._changes["blobs"] = write_blobs(self.writer.root, blobs)
            self._blob_bytes = blobs

    def commit(self) -> Snapshot:
        """Publish the new version (see the module docstring); returns its snapshot."""
        changes = {**self._changes, "segments": tuple(self.segments)}
        version = self.writer.next_version
        try:
            return self.writer.publish(self.operation, changes, self._new_segments, self._new_deletions,
                                       self._blob_bytes)
        finally:  # once the manifest is published its files belong to the store, whatever fails after
            self.committed = self.writer.next_version > version

    def abort(self) -> None:
        """Unlink the files this transaction wrote (best effort: GC removes what remains)."""
        for p in self._created:
            try:
                p.unlink(missing_ok=True)
            except OSError:
                log.warning("could not remove %s", p)
        self._created.clear()
