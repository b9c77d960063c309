"""The store: a directory of versioned, memory-mapped Arrow segments with one writer.

Layout::

    <root>/_lock                    writer lock (flock; released by the kernel on process death)
    <root>/_manifests/%08d.json     one manifest per committed version
    <root>/segments/<uuid>.arrow    immutable segments (see segment.py)
    <root>/deletions/<uuid>.arrow   cumulative per-segment deletion files (see deletions.py)
    <root>/quantizers/<sha256>.bin  opaque blobs (quantiser states), shared across versions

Durability guarantee: every ``write``/``delete``/``update_metadata``/``compact`` is one
atomic commit (the protocol is in :mod:`vqsearch.storage.commit`).  When the call
returns the change is durable (it survives a killed process and, on a filesystem
that honours fsync, power loss).  If the process dies earlier, the previous version
stays current and the partial files are removed by the next writer.  There is no WAL
and no buffering: each acknowledged call is its own small segment, and size-tiered
automatic compaction keeps the segment count bounded.  Batch small writes for
throughput (each commit costs a few fsyncs).

Readers pin a version (a :class:`Snapshot`) and never block or get blocked.
Opening is O(manifest): files are memory-mapped and checked structurally; column
checksums are verified lazily on first use (or eagerly with ``on_corrupt="skip"``
and :meth:`Store.verify`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import AlreadyExists, Conflict, CorruptData, InvalidInput, NotFound, UnknownIds
from . import compaction
from ._fsutil import fsync_dir
from .batch import check_codecs, check_config, metadata_update_batch, validate_batch
from .blobs import OnCorrupt, SkippedFile, check_blobs, read_blobs, write_blobs
from .commit import Writer
from .config import Layout, StoreConfig, StorePolicy
from .deletions import DeletionVector
from .ids import as_id_array, preview, unique_ids
from .lock import WriterLock
from .manifest import MANIFEST_DIR, Manifest, list_versions, read_manifest, write_manifest
from .opening import SUBDIRS, Vanished, load_version, remove_temp_files
from .segment import Segment
from .snapshot import Snapshot

log = logging.getLogger(__name__)

_OPEN_RETRIES = 20


class VersionInfo(NamedTuple):
    """One retained version: its number, commit time (seconds since the epoch) and live rows."""

    version: int
    timestamp: float
    rows: int


class Store:
    """Durable, versioned segment storage for one index (see module docstring).

    Create with :meth:`create`, open with :meth:`open`; use as a context manager
    or call :meth:`close` to release the writer lock.
    """

    def __init__(self, root: Path, snap: Snapshot, *, lock: WriterLock | None, skipped: list[SkippedFile],
                 policy: StorePolicy, next_version: int, segment_cache: dict[str, Segment]) -> None:
        self._root = root
        self._lock = lock
        self._finalizer = weakref.finalize(self, lock.release) if lock is not None else None
        self._skipped = list(skipped)
        self._policy = policy
        self._writer = None if lock is None else Writer(root, snap, policy=policy, next_version=next_version,
                                                        segments=segment_cache)
        self._read_snap = snap
        self._read_cache = segment_cache
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
        config = check_config(cfg.config)
        blobs = check_blobs(cfg.blobs)
        codecs = check_codecs(cfg.codecs)
        root = Path(path)
        if list_versions(root):
            raise AlreadyExists(f"an index already exists at {root}")
        if root.exists() and not root.is_dir():
            raise AlreadyExists(f"{root} exists and is not a directory")
        root.mkdir(parents=True, exist_ok=True)
        for sub in SUBDIRS:
            (root / sub).mkdir(exist_ok=True)
        lock = WriterLock(root).acquire()
        try:
            if list_versions(root):  # lost a race with another creator
                raise AlreadyExists(f"an index already exists at {root}")
            entries = write_blobs(root, blobs)
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
                remove_temp_files(root)
            snap, skipped, cache = _load(root, version, on_corrupt, racing=lock is None and version is None)
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
        return f"Store({str(self._root)!r}, version={self.version}, rows={self.snapshot().num_rows}, {mode})"

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
        return self.snapshot().version

    @property
    def config(self) -> dict[str, Any]:
        """The opaque index config stored in the manifest."""
        return dict(self.snapshot().config)

    @property
    def blobs(self) -> dict[str, bytes]:
        """The opaque blobs (quantiser states) of this version."""
        return self.snapshot().blobs

    @property
    def layout(self) -> Layout:
        return self.snapshot().layout

    @property
    def policy(self) -> StorePolicy:
        return self._policy

    @property
    def skipped(self) -> list[SkippedFile]:
        """Files left out by ``on_corrupt="skip"``."""
        return list(self._skipped)

    def __len__(self) -> int:
        return self.snapshot().num_rows

    def snapshot(self) -> Snapshot:
        """The current version, pinned: later writes do not change it and never wait for it."""
        return self._read_snap if self._writer is None else self._writer.snapshot

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
            pyarrow Table/RecordBatch, dict of columns or pandas DataFrame with n rows.
            Any subset of the declared columns (the others are null for these rows) plus
            new columns, which this commit appends to the schema (rows written earlier read
            them as null).  A declared column keeps its type (see :mod:`.schema`).  ``None``
            stores nulls.
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
            writer = self._writable()
            snap = writer.snapshot
            batch = validate_batch(snap.layout, ids, columns, vectors, metadata, extra)
            new_config = None if config is None else check_config(config)
            new_blobs = None if blobs is None else check_blobs(blobs)
            n = batch.num_rows
            if n == 0 and new_config is None and new_blobs is None:
                return snap.version
            seg_idx, rows = snap.locate(batch.ids)
            if not upsert and (seg_idx >= 0).any():
                dup = batch.ids[seg_idx >= 0]
                raise Conflict(f"{dup.size} id(s) already exist (use upsert to replace them): {preview(dup)}")
            with writer.transaction("upsert" if upsert else "write") as tx:
                tx.delete_rows(seg_idx, rows)
                tx.add_rows(batch)
                tx.set(layout=batch.layout, config=new_config, blobs=new_blobs)
                tx.commit()
            writer.compact(full=False)
            return writer.snapshot.version

    def delete(self, ids: object) -> int:
        """Delete rows by id (tombstones); durable on return.

        Raises ``UnknownIds`` listing ids that are not present; then nothing is deleted.
        Returns the current version after the call.
        """
        with self._mutex:
            writer = self._writable()
            snap = writer.snapshot
            q = np.unique(as_id_array(ids))
            if q.size == 0:
                return snap.version
            seg_idx, rows = snap.locate(q)
            missing = q[seg_idx < 0]
            if missing.size:
                raise UnknownIds(f"cannot delete {missing.size} id(s) that are not present: {preview(missing)}")
            with writer.transaction("delete") as tx:
                tx.delete_rows(seg_idx, rows)
                tx.commit()
            writer.compact(full=False)
            return writer.snapshot.version

    def update_metadata(self, ids: object, values: object) -> int:
        """Set metadata columns of existing rows, keeping their codes and vectors; durable on return.

        Parameters
        ----------
        ids
            uint64-compatible (n,) ids of live rows, unique.
        values
            The new values, one per id: ``{column: values}`` (a dict of columns), a pyarrow
            Table/RecordBatch or a pandas DataFrame with n rows.  Columns not named keep their
            values; a column the schema lacks is declared (other rows read it as null); ``None``
            values set nulls.  Types follow the rules of :meth:`write`.

        Segments are immutable, so the rows are rewritten: one new segment holds them with their
        code and vector bytes copied, and the old rows are marked deleted, all in one commit (the
        cost is that of writing n rows, never a re-encode; see benchmarks/RESULTS.md).  Raises
        ``UnknownIds`` listing ids that are not present; on any error nothing is written.  Returns
        the current version after the call; an empty ``ids`` is a no-op.
        """
        with self._mutex:
            writer = self._writable()
            snap = writer.snapshot
            q = unique_ids(as_id_array(ids))
            if q.size == 0:
                return snap.version
            batch, seg_idx, rows = metadata_update_batch(snap, q, values)
            with writer.transaction("update_metadata") as tx:
                tx.delete_rows(seg_idx, rows)
                tx.add_rows(batch)
                tx.set(layout=batch.layout)
                tx.commit()
            writer.compact(full=False)
            return writer.snapshot.version

    def set_config(self, config: Mapping[str, Any] | None = None, blobs: Mapping[str, bytes] | None = None) -> int:
        """Replace the stored index config and/or blobs in a new version; returns it."""
        with self._mutex:
            writer = self._writable()
            new_config = None if config is None else check_config(config)
            new_blobs = None if blobs is None else check_blobs(blobs)
            if new_config is None and new_blobs is None:
                return writer.snapshot.version
            with writer.transaction("config") as tx:
                tx.set(config=new_config, blobs=new_blobs)
                tx.commit()
            return writer.snapshot.version

    def set_trained(self, *, code_columns: Mapping[str, int], blobs: Mapping[str, bytes],
                    config: Mapping[str, Any] | None = None) -> int:
        """Declare the code columns (known only once quantisers are trained) and store their states.

        Allowed only while the store holds no segment, since every segment's schema
        carries the code widths; raises ``Conflict`` otherwise.  ``blobs`` replaces the
        stored blobs.  Returns the new version.
        """
        with self._mutex:
            writer = self._writable()
            snap = writer.snapshot
            if snap.manifest.segments:
                raise Conflict(f"code columns are frozen once segments exist ({len(snap.manifest.segments)} "
                               f"segment(s) in version {snap.version}); they are {snap.layout.code_columns}")
            layout = Layout.validated(dim=snap.layout.dim, vector_dtype=snap.layout.vector_dtype,
                                      code_columns=code_columns, extra_columns=snap.layout.extra_columns,
                                      metadata_schema=snap.layout.metadata_schema, cluster_by=snap.layout.cluster_by)
            new_blobs = check_blobs(blobs)
            new_config = None if config is None else check_config(config)
            with writer.transaction("train") as tx:
                tx.set(layout=layout, config=new_config, blobs=new_blobs)
                tx.commit()
            return writer.snapshot.version

    def compact(self) -> int:
        """Merge every partial segment and drop all dead rows now; returns the current version."""
        with self._mutex:
            writer = self._writable()
            writer.compact(full=True)
            return writer.snapshot.version

    def restore(self, version: int) -> int:
        """Make a retained older version current again (as a new version); returns it."""
        with self._mutex:
            writer = self._writable()
            old = read_manifest(self._root, version)
            segs = [Segment(self._root, e, old.layout) for e in old.segments]
            dvs = [DeletionVector(self._root, e.deletion, e) for e in old.segments if e.deletion is not None]
            blobs = read_blobs(self._root, old, "raise")[0]
            changes = {"layout": old.layout, "config": old.config, "blobs": old.blobs, "codecs": old.codecs,
                       "segments": old.segments}
            writer.publish(f"restore:{version}", changes, segs, dvs, blobs)
            return writer.snapshot.version

    # ================================================================ inspection
    def versions(self) -> list[VersionInfo]:
        """Retained versions on disk: (version, timestamp, live rows), ascending."""
        out = []
        for v in list_versions(self._root):
            try:
                m = self._writer.manifest(v) if self._writer is not None else read_manifest(self._root, v)
            except (CorruptData, NotFound) as exc:
                log.warning("version %d unreadable: %s", v, exc)
                continue
            out.append(VersionInfo(m.version, m.timestamp, m.num_rows))
        return out

    def stats(self) -> dict[str, Any]:
        """Sizes and counts of the current version (from the manifest; no data reads)."""
        m = self.snapshot().manifest
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
        for view in self.snapshot().segments:
            try:
                view.segment.verify_all()
                _ = view.dead_rows
            except CorruptData as exc:
                problems.append(SkippedFile(view.name, str(exc)))
        return problems

    def refresh(self) -> int:
        """Read-only stores: move to the latest committed version (writers are always current)."""
        with self._mutex:
            if self._writer is not None:
                return self.version
            latest = list_versions(self._root)
            if latest and latest[-1] != self.version:
                snap, _, cache = _load(self._root, None, "raise", racing=True, cache=self._read_cache)
                self._read_snap, self._read_cache = snap, cache
            return self.version

    # ================================================================ internals
    def _writable(self) -> Writer:
        if self._closed:
            raise Conflict(f"store {self._root} is closed")
        if self._writer is None:
            raise Conflict(f"store {self._root} was opened read-only")
        return self._writer


def _load(root: Path, version: int | None, on_corrupt: OnCorrupt, *, racing: bool,
          cache: dict[str, Segment] | None = None) -> tuple[Snapshot, list[SkippedFile], dict[str, Segment]]:
    """:func:`load_version`, retried while a concurrent writer's GC removes the files being opened."""
    for _ in range(_OPEN_RETRIES):
        try:
            return load_version(root, version, on_corrupt, racing=racing, cache=cache)
        except Vanished:
            continue
    raise CorruptData(f"files of {root} kept disappearing while opening it")
