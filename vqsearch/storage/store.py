"""The store: a directory of versioned, memory-mapped Arrow segments with one writer.

Layout::

    <root>/_lock                    writer lock (flock; released by the kernel on process death)
    <root>/_manifests/%08d.json     one manifest per committed version
    <root>/segments/<uuid>.arrow    immutable segments (see segment.py)
    <root>/deletions/<uuid>.arrow   cumulative per-segment deletion files (see deletions.py)
    <root>/quantizers/<sha256>.bin  opaque blobs (quantiser states), shared across versions

Durability guarantee: every ``write``/``delete``/``compact`` is one atomic commit.
New files are written and fsync'd, their directories fsync'd, then the manifest is
written to a temp file, fsync'd, renamed to ``_manifests/%08d.json`` and the
directory fsync'd.  When the call returns the change is durable (it survives a
killed process and, on a filesystem that honours fsync, power loss).  If the
process dies earlier, the previous version stays current and the partial files
are removed by the next writer's garbage collection.  There is no WAL and no
buffering: each acknowledged call is its own small segment, and size-tiered
automatic compaction keeps the segment count bounded.  Batch small writes for
throughput (each commit costs a few fsyncs).

Readers pin a version (a :class:`Snapshot`) and never block or get blocked.
Opening is O(manifest): files are memory-mapped and checked structurally; column
checksums are verified lazily on first use (or eagerly with ``on_corrupt="skip"``
and :meth:`Store.verify`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from .._validation import as_code_matrix
from ..errors import (
    AlreadyExists,
    Conflict,
    CorruptData,
    DimensionMismatch,
    InvalidInput,
    NonFiniteInput,
    NotFound,
    UnknownIds,
)
from . import compaction
from ._fsutil import TMP_PREFIX, atomic_write, fsync_dir
from .config import Layout, StoreConfig, StorePolicy, check_name
from .deletions import DeletionVector, write_deletion
from .lock import WriterLock
from .manifest import (
    BLOB_DIR,
    DELETION_DIR,
    MANIFEST_DIR,
    SEGMENT_DIR,
    BlobEntry,
    Manifest,
    SegmentEntry,
    list_versions,
    manifest_path,
    read_manifest,
    write_manifest,
)
from .schema import as_extra_columns, as_metadata_table, conform_metadata
from .segment import Segment, take_rows, write_segment
from .snapshot import SegmentView, Snapshot, _preview, as_id_array

log = logging.getLogger(__name__)

OnCorrupt = Literal["raise", "skip"]
_SUBDIRS = (MANIFEST_DIR, SEGMENT_DIR, DELETION_DIR, BLOB_DIR)
_OPEN_RETRIES = 20


@dataclass(frozen=True)
class SkippedFile:
    """A file left out by ``on_corrupt="skip"`` (or reported by :meth:`Store.verify`)."""

    file: str
    reason: str


class VersionInfo(NamedTuple):
    version: int
    timestamp: float
    rows: int


class _Vanished(Exception):
    """A file of the version being opened disappeared (GC by a concurrent writer)."""


class Store:
    """Durable, versioned segment storage for one index (see module docstring).

    Create with :meth:`create`, open with :meth:`open`; use as a context manager
    or call :meth:`close` to release the writer lock.
    """

    def __init__(self, root: Path, snap: Snapshot, *, lock: WriterLock | None, skipped: list[SkippedFile],
                 policy: StorePolicy, next_version: int, segment_cache: dict[str, Segment]) -> None:
        self._root = root
        self._snap = snap
        self._lock = lock
        self._finalizer = weakref.finalize(self, lock.release) if lock is not None else None
        self._skipped = list(skipped)
        self._policy = policy
        self._next_version = next_version
        self._segments = segment_cache
        self._deletions: dict[str, DeletionVector] = {
            v.deletion.entry.file: v.deletion for v in snap.segments if v.deletion is not None}
        self._manifests: dict[int, Manifest] = {snap.version: snap.manifest}
        self._mutex = threading.RLock()
        self._closed = False

    # ================================================================ lifecycle
    @classmethod
    def create(cls, path: str | os.PathLike, cfg: StoreConfig) -> Store:
        """Create a new, empty store at ``path`` (version 1) and return it opened for writing.

        Raises ``AlreadyExists`` if ``path`` already holds an index.
        """
        if not isinstance(cfg, StoreConfig):
            raise InvalidInput(f"cfg must be a StoreConfig, got {type(cfg).__name__}")
        layout = cfg.layout()
        if not isinstance(cfg.policy, StorePolicy):
            raise InvalidInput("cfg.policy must be a StorePolicy")
        config = _check_config(cfg.config)
        blobs = _check_blobs(cfg.blobs)
        codecs = _check_codecs(cfg.codecs)
        root = Path(path)
        if list_versions(root):
            raise AlreadyExists(f"an index already exists at {root}")
        if root.exists() and not root.is_dir():
            raise AlreadyExists(f"{root} exists and is not a directory")
        root.mkdir(parents=True, exist_ok=True)
        for sub in _SUBDIRS:
            (root / sub).mkdir(exist_ok=True)
        lock = WriterLock(root).acquire()
        try:
            if list_versions(root):  # lost a race with another creator
                raise AlreadyExists(f"an index already exists at {root}")
            entries = _write_blobs(root, blobs)
            fsync_dir(root)
            m = Manifest(version=1, timestamp=time.time(), operation="create", layout=layout, policy=cfg.policy,
                         config=config, blobs=entries, codecs=codecs, segments=())
            write_manifest(root, m)
        except BaseException:
            lock.release()
            raise
        snap = Snapshot(m, [], blobs)
        return cls(root, snap, lock=lock, skipped=[], policy=cfg.policy, next_version=2, segment_cache={})

    @classmethod
    def open(cls, path: str | os.PathLike, *, version: int | None = None, read_only: bool | None = None,
             on_corrupt: OnCorrupt = "raise", policy: StorePolicy | None = None) -> Store:
        """Open an existing store.

        Parameters
        ----------
        version
            ``None`` (default) for the latest version, or a retained version number for
            time travel (read-only).
        read_only
            Readers take no lock and never block the writer; a writer takes the single-writer
            lock and raises ``Conflict`` if another writer holds it.  Default (``None``): a
            writer for the latest version, a reader when ``version`` is given.
        on_corrupt
            ``"raise"`` (default): a corrupt or missing file raises ``CorruptData`` naming
            it (content checksums are checked lazily, at first use of each column).
            ``"skip"``: verify every checksum now (O(data)), leave out corrupt segments
            (and fall back to an older manifest if the latest is corrupt) and list them
            in :attr:`skipped`.  A writer opened this way drops the skipped segments from
            the next version it commits.
        policy
            Override the stored retention/compaction policy (persisted by the next commit).
        """
        root = Path(path)
        if on_corrupt not in ("raise", "skip"):
            raise InvalidInput(f"on_corrupt must be 'raise' or 'skip', got {on_corrupt!r}")
        if read_only is None:
            read_only = version is not None
        if version is not None and not read_only:
            raise InvalidInput("opening an older version (time travel) is read-only: do not pass read_only=False "
                               "(use Store.restore to make an old version current)")
        if policy is not None and not isinstance(policy, StorePolicy):
            raise InvalidInput("policy must be a StorePolicy")
        if not (root / MANIFEST_DIR).is_dir():
            raise NotFound(f"no index at {root}")
        lock = None if read_only else WriterLock(root).acquire()
        try:
            if lock is not None:
                _remove_temp_files(root)
            for attempt in range(_OPEN_RETRIES):
                try:
                    snap, skipped, cache = _load(root, version, on_corrupt, racing=lock is None and version is None)
                    break
                except _Vanished:
                    if attempt == _OPEN_RETRIES - 1:
                        raise CorruptData(f"files of {root} kept disappearing while opening it") from None
            versions = list_versions(root)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        for s in skipped:
            log.warning("skipped %s: %s", s.file, s.reason)
        pol = policy if policy is not None else snap.manifest.policy
        return cls(root, snap, lock=lock, skipped=skipped, policy=pol,
                   next_version=max(versions + [snap.version]) + 1, segment_cache=cache)

    def close(self) -> None:
        """Release the writer lock.  Snapshots taken earlier stay readable."""
        with self._mutex:
            self._closed = True
            if self._finalizer is not None:
                self._finalizer()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "writer"
        return f"Store({str(self._root)!r}, version={self.version}, rows={self._snap.num_rows}, {mode})"

    # ================================================================ properties
    @property
    def path(self) -> Path:
        return self._root

    @property
    def read_only(self) -> bool:
        return self._lock is None

    @property
    def version(self) -> int:
        """The version this store object currently sees (latest for a writer)."""
        return self._snap.version

    @property
    def config(self) -> dict[str, Any]:
        """The opaque index config stored in the manifest."""
        return dict(self._snap.config)

    @property
    def blobs(self) -> dict[str, bytes]:
        """The opaque blobs (quantiser states) of this version."""
        return self._snap.blobs

    @property
    def layout(self) -> Layout:
        return self._snap.layout

    @property
    def policy(self) -> StorePolicy:
        return self._policy

    @property
    def skipped(self) -> list[SkippedFile]:
        """Files left out by ``on_corrupt="skip"``."""
        return list(self._skipped)

    def __len__(self) -> int:
        return self._snap.num_rows

    def snapshot(self) -> Snapshot:
        """The current version, pinned: later writes do not change it and never wait for it."""
        return self._snap

    # ================================================================ writes
    def write(self, ids: object, columns: Mapping[str, object], vectors: object = None, metadata: object = None,
              extra: Mapping[str, object] | None = None, *, upsert: bool = False,
              config: Mapping[str, Any] | None = None, blobs: Mapping[str, bytes] | None = None) -> int:
        """Add (or, with ``upsert=True``, add-or-replace) a batch of rows; durable on return.

        Parameters
        ----------
        ids
            uint64-compatible (n,) non-negative ids, unique within the batch.
        columns
            One uint8 (n, code_size) array per code column of the layout.
        vectors
            (n, dim) floats (stored as float16) if the layout keeps vectors, else None.
        metadata
            pyarrow Table/RecordBatch, dict of columns or pandas DataFrame with n rows;
            its schema is declared by the first write carrying metadata.  ``None`` stores
            nulls.
        extra
            Small per-row numeric columns (name -> (n,) array); declared by the first write.
        upsert
            Replace rows whose id already exists (newest wins).  Without it an existing id
            raises ``Conflict``.
        config, blobs
            Optionally replace the stored index config / blobs in the same atomic commit
            (e.g. a quantiser trained on the first batch).

        Returns the version that is current after the call (automatic compaction may
        commit one more version after the write's own).  On any error nothing is written.
        An empty batch without config/blobs changes is a no-op.
        """
        with self._mutex:
            self._check_writable()
            snap = self._snap
            layout = snap.layout
            batch = _validate_batch(layout, ids, columns, vectors, metadata, extra)
            new_config = None if config is None else _check_config(config)
            new_blobs = None if blobs is None else _check_blobs(blobs)
            n = batch.ids.shape[0]
            if n == 0 and new_config is None and new_blobs is None:
                return snap.version
            seg_idx, rows = snap.locate(batch.ids) if n else (np.empty(0, np.int64), np.empty(0, np.int64))
            if not upsert and (seg_idx >= 0).any():
                dup = batch.ids[seg_idx >= 0]
                raise Conflict(f"{dup.size} id(s) already exist (use upsert to replace them): {_preview(dup)}")
            created: list[Path] = []
            try:
                segments = list(snap.manifest.segments)
                new_segs: list[Segment] = []
                new_dvs = self._mark_dead(snap, seg_idx, rows, batch.ids, segments, created)
                if n:
                    new_segs = self._write_rows(batch, created)
                    segments.extend(s.entry for s in new_segs)
                changes: dict[str, Any] = {"layout": batch.layout, "segments": tuple(segments)}
                blob_bytes = None
                if new_config is not None:
                    changes["config"] = new_config
                if new_blobs is not None:
                    changes["blobs"] = _write_blobs(self._root, new_blobs)
                    blob_bytes = new_blobs
                op = "upsert" if upsert else "write"
                self._commit(op, changes, new_segs, new_dvs, blob_bytes)
            except BaseException:
                _unlink_all(created)
                raise
            self._auto_compact()
            return self._snap.version

    def delete(self, ids: object) -> int:
        """Delete rows by id (tombstones); durable on return.

        Raises ``UnknownIds`` listing ids that are not present; then nothing is deleted.
        Returns the current version after the call.
        """
        with self._mutex:
            self._check_writable()
            snap = self._snap
            q = np.unique(as_id_array(ids))
            if q.size == 0:
                return snap.version
            seg_idx, rows = snap.locate(q)
            missing = q[seg_idx < 0]
            if missing.size:
                raise UnknownIds(f"cannot delete {missing.size} id(s) that are not present: {_preview(missing)}")
            created: list[Path] = []
            try:
                segments = list(snap.manifest.segments)
                new_dvs = self._mark_dead(snap, seg_idx, rows, q, segments, created)
                self._commit("delete", {"segments": tuple(segments)}, [], new_dvs, None)
            except BaseException:
                _unlink_all(created)
                raise
            self._auto_compact()
            return self._snap.version

    def set_config(self, config: Mapping[str, Any] | None = None, blobs: Mapping[str, bytes] | None = None) -> int:
        """Replace the stored index config and/or blobs in a new version; returns it."""
        with self._mutex:
            self._check_writable()
            changes: dict[str, Any] = {}
            if config is not None:
                changes["config"] = _check_config(config)
            new_blobs = None if blobs is None else _check_blobs(blobs)
            if not changes and new_blobs is None:
                return self.version
            if new_blobs is not None:
                changes["blobs"] = _write_blobs(self._root, new_blobs)
            self._commit("config", changes, [], [], new_blobs)
            return self.version

    def set_trained(self, *, code_columns: Mapping[str, int], blobs: Mapping[str, bytes],
                    config: Mapping[str, Any] | None = None) -> int:
        """Declare the code columns (known only once quantisers are trained) and store their states.

        Allowed only while the store holds no segment, since every segment's schema
        carries the code widths; raises ``Conflict`` otherwise.  ``blobs`` replaces the
        stored blobs.  Returns the new version.
        """
        with self._mutex:
            self._check_writable()
            snap = self._snap
            if snap.manifest.segments:
                raise Conflict(f"code columns are frozen once segments exist ({len(snap.manifest.segments)} "
                               f"segment(s) in version {snap.version}); they are {snap.layout.code_columns}")
            layout = Layout.validated(dim=snap.layout.dim, vector_dtype=snap.layout.vector_dtype,
                                      code_columns=code_columns, extra_columns=snap.layout.extra_columns,
                                      metadata_schema=snap.layout.metadata_schema)
            new_blobs = _check_blobs(blobs)
            changes: dict[str, Any] = {"layout": layout}
            if config is not None:
                changes["config"] = _check_config(config)
            changes["blobs"] = _write_blobs(self._root, new_blobs)
            self._commit("train", changes, [], [], new_blobs)
            return self.version

    def compact(self) -> int:
        """Merge every partial segment and drop all dead rows now; returns the current version."""
        with self._mutex:
            self._check_writable()
            p = compaction.plan(self._snap.manifest.segments, self._policy, full=True)
            if not p.empty:
                self._rewrite(p)
            return self._snap.version

    def restore(self, version: int) -> int:
        """Make a retained older version current again (as a new version); returns it."""
        with self._mutex:
            self._check_writable()
            old = read_manifest(self._root, version)
            segs = [Segment(self._root, e, old.layout) for e in old.segments]
            dvs = [DeletionVector(self._root, e.deletion, e) for e in old.segments if e.deletion is not None]
            blobs = _read_blobs(self._root, old, "raise")[0]
            changes = {"layout": old.layout, "config": old.config, "blobs": old.blobs, "codecs": old.codecs,
                       "segments": old.segments}
            self._commit(f"restore:{version}", changes, segs, dvs, blobs)
            return self._snap.version

    # ================================================================ inspection
    def versions(self) -> list[VersionInfo]:
        """Retained versions on disk: (version, timestamp, live rows), ascending."""
        out = []
        for v in list_versions(self._root):
            try:
                m = self._manifests.get(v) or read_manifest(self._root, v)
            except (CorruptData, NotFound) as exc:
                log.warning("version %d unreadable: %s", v, exc)
                continue
            out.append(VersionInfo(m.version, m.timestamp, m.num_rows))
        return out

    def stats(self) -> dict[str, Any]:
        """Sizes and counts of the current version (from the manifest; no data reads)."""
        m = self._snap.manifest
        half = self._policy.target_segment_bytes / 2
        return {
            "version": m.version,
            "rows": m.num_rows,
            "dead_rows": sum(s.dead_rows for s in m.segments),
            "segments": len(m.segments),
            "partial_segments": sum(1 for s in m.segments if compaction.live_bytes(s) < half),
            "deletion_files": sum(1 for s in m.segments if s.deletion is not None),
            "bytes": sum(s.size + (s.deletion.size if s.deletion else 0) for s in m.segments)
            + sum(b.size for b in m.blobs.values()),
            "dim": m.layout.dim,
            "vector_dtype": m.layout.vector_dtype,
            "code_columns": dict(m.layout.code_columns),
            "extra_columns": dict(m.layout.extra_columns or {}),
            "metadata_columns": [] if m.layout.metadata_schema is None else m.layout.metadata_schema.names,
            "retained_versions": list_versions(self._root),
            "policy": self._policy.to_json(),
            "read_only": self.read_only,
            "skipped": [s.file for s in self._skipped],
        }

    def verify(self) -> list[SkippedFile]:
        """Check every checksum of the current version now (O(data)); returns the problems found."""
        problems = []
        for view in self._snap.segments:
            try:
                view.segment.verify_all()
                _ = view.dead_rows
            except CorruptData as exc:
                problems.append(SkippedFile(view.name, str(exc)))
        return problems

    def refresh(self) -> int:
        """Read-only stores: move to the latest committed version (writers are always current)."""
        with self._mutex:
            if self._lock is not None:
                return self.version
            latest = list_versions(self._root)
            if latest and latest[-1] != self.version:
                snap, skipped, cache = _load(self._root, None, "raise", racing=True, cache=self._segments)
                self._snap, self._segments = snap, cache
            return self.version

    # ================================================================ internals
    def _check_writable(self) -> None:
        if self._closed:
            raise Conflict(f"store {self._root} is closed")
        if self._lock is None:
            raise Conflict(f"store {self._root} was opened read-only")

    def _mark_dead(self, snap: Snapshot, seg_idx: np.ndarray, rows: np.ndarray, ids: np.ndarray,
                   segments: list[SegmentEntry], created: list[Path]) -> list[DeletionVector]:
        """Write new cumulative deletion files for the segments holding the hit rows."""
        out = []
        for i in np.unique(seg_idx[seg_idx >= 0]):
            view = snap.segments[int(i)]
            sel = seg_idx == i
            new_rows = rows[sel].astype(np.uint32)
            old = view.dead_rows
            all_rows = np.union1d(old, new_rows).astype(np.uint32)
            all_ids = view.ids[all_rows]
            entry = segments[int(i)]
            d = write_deletion(self._root, all_rows, all_ids, entry)
            created.append(self._root / d.file)
            segments[int(i)] = replace(entry, deletion=d)
            out.append(DeletionVector(self._root, d, segments[int(i)]))
        return out

    def _write_rows(self, batch: _Batch, created: list[Path]) -> list[Segment]:
        layout = batch.layout
        n = batch.ids.shape[0]
        meta_bytes = 0 if batch.metadata is None else batch.metadata.nbytes / n
        per = max(1, int(self._policy.target_segment_bytes // (layout.row_bytes() + meta_bytes)))
        out = []
        for start in range(0, n, per):
            sl = slice(start, min(n, start + per))
            seg = write_segment(
                self._root, layout=layout, version=self._next_version, ids=batch.ids[sl],
                columns={k: v[sl] for k, v in batch.columns.items()},
                vectors=None if batch.vectors is None else batch.vectors[sl],
                extra={k: v[sl] for k, v in batch.extra.items()},
                metadata=None if batch.metadata is None else batch.metadata.slice(sl.start, sl.stop - sl.start),
                codecs=self._snap.manifest.codecs, blob_hashes=self._blob_hashes())
            created.append(seg.path)
            out.append(seg)
        return out

    def _blob_hashes(self) -> dict[str, str]:
        return {k: b.sha256 for k, b in self._snap.manifest.blobs.items()}

    def _commit(self, operation: str, changes: dict[str, Any], new_segments: list[Segment],
                new_deletions: list[DeletionVector], blob_bytes: Mapping[str, bytes] | None) -> None:
        """Publish a new manifest (the commit point), then swap in the new snapshot and GC."""
        old = self._snap
        m = old.manifest.evolve(version=self._next_version, timestamp=time.time(), operation=operation,
                                policy=self._policy, **changes)
        if new_segments:
            fsync_dir(self._root / SEGMENT_DIR)
        if new_deletions:
            fsync_dir(self._root / DELETION_DIR)
        write_manifest(self._root, m)  # <- commit point
        self._next_version = m.version + 1
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
        self._snap = Snapshot(m, views, blobs)
        live = {e.file for e in m.segments}
        self._segments = {k: v for k, v in self._segments.items() if k in live}
        live_dv = {e.deletion.file for e in m.segments if e.deletion is not None}
        self._deletions = {k: v for k, v in self._deletions.items() if k in live_dv}
        self._manifests[m.version] = m
        self._gc()

    def _auto_compact(self) -> None:
        if not self._policy.auto_compact:
            return
        p = compaction.plan(self._snap.manifest.segments, self._policy, full=False)
        if not p.empty:
            self._rewrite(p)

    def _rewrite(self, p: compaction.CompactionPlan) -> None:
        snap = self._snap
        entries = snap.manifest.segments
        chosen = [entries[i] for i in p.rewrite]
        views = [snap.segments[i] for i in p.rewrite]
        created: list[Path] = []
        try:
            chunk = compaction.rows_per_output(chosen, self._policy, snap.layout)
            new = compaction.merge(self._root, views, layout=snap.layout, version=self._next_version,
                                   chunk_rows=chunk, codecs=snap.manifest.codecs, blob_hashes=self._blob_hashes())
            created.extend(s.path for s in new)
            gone = set(p.rewrite) | set(p.drop)
            kept = [e for i, e in enumerate(entries) if i not in gone]
            self._commit("compact", {"segments": tuple(kept + [s.entry for s in new])}, new, [], None)
        except BaseException:
            _unlink_all(created)
            raise
        log.info("compacted %d segment(s) (dropped %d) into %d", len(p.rewrite), len(p.drop), len(new))

    def _gc(self) -> None:
        """Drop manifests beyond retention, then every file no retained manifest references."""
        versions = list_versions(self._root)
        keep = set(versions[-self._policy.keep_versions:]) | {self._snap.version}
        for v in versions:
            if v not in keep:
                manifest_path(self._root, v).unlink(missing_ok=True)
                self._manifests.pop(v, None)
        referenced: set[str] = set()
        for v in sorted(keep):
            m = self._manifests.get(v)
            if m is None:
                try:
                    m = read_manifest(self._root, v)
                except NotFound:
                    continue
                except CorruptData as exc:  # unusable by anyone; its files are not protected
                    log.warning("ignoring corrupt manifest during GC: %s", exc)
                    continue
                self._manifests[v] = m
            referenced |= m.files()
        for sub in (SEGMENT_DIR, DELETION_DIR, BLOB_DIR):
            try:
                names = os.listdir(self._root / sub)
            except FileNotFoundError:
                continue
            for name in names:
                if f"{sub}/{name}" not in referenced:
                    (self._root / sub / name).unlink(missing_ok=True)


# ==================================================================== helpers
@dataclass(frozen=True)
class _Batch:
    layout: Layout
    ids: np.ndarray
    columns: dict[str, np.ndarray]
    vectors: np.ndarray | None
    extra: dict[str, np.ndarray]
    metadata: Any


def _validate_batch(layout: Layout, ids: object, columns: object, vectors: object, metadata: object,
                    extra: object) -> _Batch:
    """Validate a write batch completely before touching the disk."""
    q = as_id_array(ids)
    n = q.shape[0]
    if n > 1:
        s = np.sort(q)
        dup = np.unique(s[1:][s[1:] == s[:-1]])
        if dup.size:
            raise InvalidInput(f"duplicate ids in one batch ({dup.size}): {_preview(dup)}")
    if not isinstance(columns, Mapping):
        raise InvalidInput(f"columns must be a dict name -> uint8 codes, got {type(columns).__name__}")
    if set(columns) != set(layout.code_columns):
        raise InvalidInput(f"code columns {sorted(columns)} do not match the index's {sorted(layout.code_columns)}")
    codes = {}
    for name, size in layout.code_columns.items():
        arr = as_code_matrix(columns[name], code_size=size, name=f"codes of column {name!r}")
        if arr.shape[0] != n:
            raise InvalidInput(f"codes of column {name!r} have {arr.shape[0]} rows, expected {n} (one per id)")
        codes[name] = arr
    vecs = None
    if layout.vector_dtype is None:
        if vectors is not None:
            raise InvalidInput("this index does not store vectors (vector_dtype=None); pass vectors=None")
    else:
        if vectors is None:
            raise InvalidInput("this index stores vectors: pass vectors (n, dim)")
        arr = np.asarray(vectors)
        if arr.ndim != 2 or arr.dtype.kind != "f":
            raise InvalidInput(f"vectors must be a 2-D float array, got shape {arr.shape} dtype {arr.dtype}")
        if arr.shape[1] != layout.dim:
            raise DimensionMismatch(f"vectors have dimension {arr.shape[1]}, expected {layout.dim}")
        if arr.shape[0] != n:
            raise InvalidInput(f"vectors have {arr.shape[0]} rows, expected {n} (one per id)")
        with np.errstate(over="ignore"):
            vecs = np.ascontiguousarray(arr, dtype=layout.vector_dtype)
        if vecs.size and not np.isfinite(vecs).all():
            raise NonFiniteInput(f"vectors contain NaN or inf (or values beyond the {layout.vector_dtype} range)")
    extras, extra_dtypes = as_extra_columns(extra, n, layout.extra_columns)
    table = as_metadata_table(metadata, n)
    schema = layout.metadata_schema
    if table is not None:
        table, schema = conform_metadata(table, schema)
    if n:  # a non-empty write declares the extras and (if given) the metadata schema
        layout = replace(layout, extra_columns=extra_dtypes if layout.extra_columns is None else layout.extra_columns,
                         metadata_schema=schema)
    if layout.cluster_by is not None and n > 1:
        order = np.argsort(extras[layout.cluster_by], kind="stable")
        q, codes, vecs, extras, table = take_rows(order, q, codes, vecs, extras, table)
    return _Batch(layout=layout, ids=q, columns=codes, vectors=vecs, extra=extras, metadata=table)


def _check_config(config: object) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise InvalidInput(f"config must be a JSON object (dict), got {type(config).__name__}")
    try:
        return json.loads(json.dumps(dict(config), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"config is not JSON-serialisable: {exc}") from None


def _check_blobs(blobs: object) -> dict[str, bytes]:
    if not isinstance(blobs, Mapping):
        raise InvalidInput(f"blobs must be a dict name -> bytes, got {type(blobs).__name__}")
    out = {}
    for k, v in blobs.items():
        check_name(k, "blob")
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"blob {k!r} must be bytes, got {type(v).__name__}")
        out[k] = bytes(v)
    return out


def _check_codecs(codecs: object) -> dict[str, str]:
    if not isinstance(codecs, Mapping) or not all(isinstance(v, str) for v in codecs.values()):
        raise InvalidInput("codecs must be a dict name -> label string")
    return {check_name(k, "codec"): v for k, v in codecs.items()}


def _write_blobs(root: Path, blobs: Mapping[str, bytes]) -> dict[str, BlobEntry]:
    out = {}
    for name, data in blobs.items():
        sha = hashlib.sha256(data).hexdigest()
        entry = BlobEntry(sha, len(data))
        path = root / entry.file
        if not (path.is_file() and path.stat().st_size == len(data)):
            atomic_write(path, data)
        out[name] = entry
    return out


def _read_blobs(root: Path, m: Manifest, on_corrupt: OnCorrupt) -> tuple[dict[str, bytes], list[SkippedFile]]:
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


def _load(root: Path, version: int | None, on_corrupt: OnCorrupt, *, racing: bool,
          cache: dict[str, Segment] | None = None) -> tuple[Snapshot, list[SkippedFile], dict[str, Segment]]:
    """Read a manifest and open (memory-map) its files; see ``Store.open`` for ``on_corrupt``."""
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
                    raise _Vanished() from None
                continue
            except CorruptData as exc:
                if on_corrupt == "raise":
                    raise
                skipped.append(SkippedFile(f"{MANIFEST_DIR}/{manifest_path(root, v).name}", str(exc)))
        if m is None:
            raise CorruptData(f"no readable manifest in {root / MANIFEST_DIR}")
    try:
        blobs, bad = _read_blobs(root, m, on_corrupt)
    except CorruptData:
        if racing and _manifest_superseded(root, m.version):
            raise _Vanished() from None
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
            if racing and _manifest_superseded(root, m.version):
                raise _Vanished() from None
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


def _manifest_superseded(root: Path, version: int) -> bool:
    versions = list_versions(root)
    return not versions or versions[-1] != version


def _remove_temp_files(root: Path) -> None:
    """Remove temp files left by a crashed writer (only called with the writer lock held)."""
    for sub in _SUBDIRS:
        d = root / sub
        if d.is_dir():
            for name in os.listdir(d):
                if name.startswith(TMP_PREFIX):
                    (d / name).unlink(missing_ok=True)


def _unlink_all(paths: list[Path]) -> None:
    for p in paths:
        try:
            p.unlink(missing_ok=True)
        except OSError:  # best effort: GC removes leftovers at the next commit
            log.warning("could not remove %s", p)
