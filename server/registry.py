"""Collections on disk: one :class:`vqsearch.Index` per collection plus a small registry file.

Layout of the data directory::

    <data>/collections.json         registry: name -> per-collection settings (embedder, created)
    <data>/collections/<name>/      the collection's index (see vqsearch.storage)
    <data>/entries/<name>.json      a copy of the collection's registry entry (for recovery)
    <data>/tmp/                     spooled upload bodies (emptied at startup)

The registry file is replaced atomically (temp file, fsync, rename, fsync directory),
so a crash leaves either the old or the new registry.  A collection exists once its
name is in the registry: create writes the index first and the registry entry last,
drop removes the entry first and the directory last, so a crash in between leaves
only an orphan directory, which the next create of that name removes.

Damage stays manageable:

* a collection whose index fails to open is kept as *unavailable* with its error code:
  listed, deletable, replaceable with an explicit flag, and re-openable with
  ``on_corrupt="skip"`` (leaving out damaged segments);
* a registry file that cannot be read is rebuilt from the collection directories (and the
  per-collection entry copies, which keep the embedder), with a warning; the unreadable
  file is kept beside it as ``collections.json.damaged``.

Collection names follow the storage layer's one name rule
(:func:`vqsearch.storage.config.check_name`).  Names registered before that rule (which
allowed a leading digit but no leading underscore) are still opened.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ..errors import AlreadyExists, DimensionMismatch, InvalidInput, NotFound, VQSearchError
from ..index import Index
from ..storage.config import NAME_RE
from ..storage.config import check_name as check_storage_name
from .embedders import Embedder, EmbedderFactory

LOG = logging.getLogger(__name__)

REGISTRY_FILE = "collections.json"
REGISTRY_FORMAT = 1
#: The name rule of new collections: the storage layer's (see :func:`check_name`).
NAME_PATTERN = NAME_RE.pattern
#: Names that earlier versions accepted; existing collections with such names are still opened.
_LEGACY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: object) -> str:
    """Validate a new collection name (the storage layer's rule: it becomes a directory name)."""
    return check_storage_name(name, "collection")


def _check_existing_name(name: object) -> str:
    """Validate a name read from disk: the current rule, or the rule it was created under."""
    if isinstance(name, str) and _LEGACY_NAME_RE.match(name):
        return name
    return check_name(name)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically: temp file, fsync, rename, fsync directory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CollectionUnavailable(VQSearchError):
    """The collection exists but its index could not be opened (damaged files)."""

    code = "collection_unavailable"
    http_status = 503


@dataclass(frozen=True)
class Unavailable:
    """A registered collection whose index failed to open: the error's code and message."""

    name: str
    code: str
    message: str


@dataclass
class Collection:
    """A served collection: its index, its settings and its single-writer lock."""

    name: str
    index: Index
    embedder_name: str | None
    created: float
    factory: EmbedderFactory | None = None
    writer: anyio.Lock = field(default_factory=anyio.Lock)
    _embedder: Embedder | None = None

    def embedder(self) -> Embedder:
        """The collection's text embedder; raises ``InvalidInput`` if it has none."""
        if self.embedder_name is None or self.factory is None:
            raise InvalidInput(f"collection '{self.name}' has no embedder: send 'vectors', not 'texts' "
                               f"(create the collection with \"embedder\": \"minilm\" for text)")
        if self._embedder is None:
            self._embedder = self.factory()
        return self._embedder

    @property
    def dim(self) -> int:
        return self.index.dim


class CollectionRegistry:
    """The set of collections under one data directory (thread-safe; methods are blocking)."""

    def __init__(self, data_dir: Path, embedders: Mapping[str, EmbedderFactory]) -> None:
        self.root = Path(data_dir)
        self.embedders = dict(embedders)
        self._collections: dict[str, Collection] = {}
        self._entries: dict[str, dict[str, Any]] = {}
        self._broken: dict[str, Unavailable] = {}
        self._mutex = threading.RLock()

    # ------------------------------------------------------------ paths
    @property
    def collections_dir(self) -> Path:
        return self.root / "collections"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def entries_dir(self) -> Path:
        return self.root / "entries"

    def _path(self, name: str) -> Path:
        return self.collections_dir / _check_existing_name(name)

    # ------------------------------------------------------------ lifecycle
    def open_all(self) -> None:
        """Create the layout if needed and reopen every registered collection (startup)."""
        with self._mutex:
            self.collections_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            self.entries_dir.mkdir(parents=True, exist_ok=True)
            self._entries = self._read()
            for name, entry in sorted(self._entries.items()):
                self._open(name, entry, "raise")
            LOG.info("opened %d collection(s) from %s", len(self._collections), self.root)

    def _open(self, name: str, entry: Mapping[str, Any], on_corrupt: str) -> Collection | None:
        try:
            index = Index.open(self._path(name), on_corrupt=on_corrupt)  # type: ignore[arg-type]
        except VQSearchError as exc:
            LOG.error("collection %r could not be opened: %s", name, exc)
            self._broken[name] = Unavailable(name, exc.code, exc.message or exc.code)
            return None
        self._broken.pop(name, None)
        c = self._collections[name] = self._make(name, index, entry)
        return c

    def reopen(self, name: str, on_corrupt: str = "skip") -> tuple[Collection, list[str]]:
        """Open an unavailable collection again (``on_corrupt="skip"`` leaves damaged segments out).

        Returns the collection and the files left out; raises ``CollectionUnavailable`` if it still fails.
        """
        with self._mutex:
            if name not in self._entries:
                raise NotFound(f"collection '{name}' does not exist")
            old = self._collections.pop(name, None)
            if old is not None:
                old.index.close()
            c = self._open(name, self._entries[name], on_corrupt)
            if c is None:
                b = self._broken[name]
                raise CollectionUnavailable(f"collection '{name}' still cannot be opened ({b.code}): {b.message}")
            skipped = [str(getattr(f, "path", f)) for f in getattr(c.index, "skipped", ())]
            return c, skipped

    def close_all(self) -> None:
        with self._mutex:
            for c in self._collections.values():
                c.index.close()
            self._collections.clear()

    def _make(self, name: str, index: Index, entry: Mapping[str, Any]) -> Collection:
        emb = entry.get("embedder")
        factory = self.embedders.get(emb) if emb else None
        if emb and factory is None:
            LOG.error("collection %r uses unknown embedder %r; text requests will fail", name, emb)
        return Collection(name=name, index=index, embedder_name=emb, created=float(entry.get("created", 0.0)),
                          factory=factory)

    # ------------------------------------------------------------ registry file
    def _read(self) -> dict[str, dict[str, Any]]:
        path = self.root / REGISTRY_FILE
        if not path.exists():
            return self._rebuild(None) if any(self.collections_dir.iterdir()) else {}
        try:
            doc = json.loads(path.read_text())
            if int(doc.get("format", 0)) > REGISTRY_FORMAT:
                raise InvalidInput(f"{path.name} has format {doc.get('format')}, newer than this server supports")
            entries = {str(k): dict(v) for k, v in doc["collections"].items()}
            for name in entries:
                _check_existing_name(name)
            return entries
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            if isinstance(exc, InvalidInput) and "newer than" in str(exc):
                raise
            return self._rebuild(f"{type(exc).__name__}: {exc}")

    def _rebuild(self, problem: str | None) -> dict[str, dict[str, Any]]:
        """Registry entries recovered from the collection directories (and their entry copies)."""
        path = self.root / REGISTRY_FILE
        if problem is not None:
            damaged = path.with_name(REGISTRY_FILE + ".damaged")
            path.replace(damaged)
            LOG.warning("collection registry %s is unreadable (%s); rebuilding it from %s (the damaged file is "
                        "kept as %s)", path.name, problem, self.collections_dir.name, damaged.name)
        else:
            LOG.warning("collection registry %s is missing; rebuilding it from %s", path.name,
                        self.collections_dir.name)
        entries: dict[str, dict[str, Any]] = {}
        for d in sorted(self.collections_dir.iterdir()):
            if not d.is_dir():
                continue
            try:
                name = _check_existing_name(d.name)
            except InvalidInput:
                LOG.warning("ignoring directory %s: not a collection name", d.name)
                continue
            entry: dict[str, Any] = {"embedder": None, "created": d.stat().st_mtime}
            try:
                entry.update(json.loads((self.entries_dir / f"{name}.json").read_text()))
            except (OSError, ValueError, TypeError):
                LOG.warning("collection %r: no readable entry copy; its embedder setting is lost", name)
            entries[name] = {"embedder": entry.get("embedder"), "created": float(entry.get("created", 0.0))}
        self._entries = entries
        self._write()
        return entries

    def _write(self) -> None:
        doc = {"format": REGISTRY_FORMAT, "collections": self._entries}
        atomic_write(self.root / REGISTRY_FILE, json.dumps(doc, indent=1, sort_keys=True).encode())

    def _write_entry_copy(self, name: str, entry: Mapping[str, Any]) -> None:
        atomic_write(self.entries_dir / f"{name}.json", json.dumps(dict(entry), sort_keys=True).encode())

    # ------------------------------------------------------------ queries
    def get(self, name: str) -> Collection:
        c = self._collections.get(name)
        if c is None:
            broken = self._broken.get(name)
            if broken is not None:
                raise CollectionUnavailable(f"collection '{name}' is unavailable ({broken.code}): {broken.message}; "
                                            "delete it, replace it, or open it with on_corrupt=skip")
            raise NotFound(f"collection '{name}' does not exist")
        return c

    def unavailable(self) -> list[Unavailable]:
        return [self._broken[n] for n in sorted(self._broken)]

    def check_current(self, collection: Collection) -> None:
        """Raise ``NotFound`` if ``collection`` was dropped (or replaced) since it was looked up."""
        if self._collections.get(collection.name) is not collection:
            raise NotFound(f"collection '{collection.name}' does not exist")

    def names(self) -> list[str]:
        return sorted(self._collections)

    def all(self) -> list[Collection]:
        return [self._collections[n] for n in self.names()]

    # ------------------------------------------------------------ changes
    def create(self, name: str, *, dim: int | None, metric: str = "cosine", preset: str = "default",
               embedder: str | None = None, options: Mapping[str, Any] | None = None,
               replace_unavailable: bool = False) -> Collection:
        """Create a collection (index directory, then registry entry); raises ``AlreadyExists``.

        ``options`` are :meth:`vqsearch.Index.create` arguments (scan, rescore, ivf, oversample, residual);
        those left out come from ``preset``.  ``replace_unavailable`` replaces a collection of that name
        whose index could not be opened (its data is deleted); an available one is never replaced.
        """
        check_name(name)
        factory = None
        if embedder is not None:
            factory = self.embedders.get(embedder)
            if factory is None:
                raise InvalidInput(f"unknown embedder {embedder!r}; available: {sorted(self.embedders)}")
            emb_dim = factory().dim  # raises MissingDependency (400) when the extra is absent
            if dim is None:
                dim = emb_dim
            elif dim != emb_dim:
                raise DimensionMismatch(f"embedder '{embedder}' produces {emb_dim}-d vectors, got dim {dim}")
        if dim is None:
            raise InvalidInput("dim is required for a collection without an embedder")
        with self._mutex:
            if name in self._entries:
                broken = self._broken.get(name)
                if broken is None:
                    raise AlreadyExists(f"collection '{name}' already exists")
                if not replace_unavailable:
                    raise AlreadyExists(f"collection '{name}' exists but is unavailable ({broken.code}); delete it "
                                        "or pass \"replace_unavailable\": true to replace it")
                self.drop(name)
            path = self._path(name)
            if path.exists():
                LOG.warning("removing orphan index directory %s (left by an interrupted create or drop)", path)
                shutil.rmtree(path)
            index = Index.create(path, dim=dim, metric=metric, preset=preset, **dict(options or {}))
            entry = {"embedder": embedder, "created": time.time()}
            self._entries[name] = entry
            try:
                self._write_entry_copy(name, entry)
                self._write()
            except BaseException:
                del self._entries[name]
                index.close()
                shutil.rmtree(path, ignore_errors=True)
                raise
            c = self._collections[name] = self._make(name, index, entry)
            return c

    def drop(self, name: str) -> None:
        """Delete a collection: registry entry first, then its directory."""
        with self._mutex:
            if name not in self._entries:
                raise NotFound(f"collection '{name}' does not exist")
            entry = self._entries.pop(name)
            try:
                self._write()
            except BaseException:
                self._entries[name] = entry
                raise
            c = self._collections.pop(name, None)
            self._broken.pop(name, None)
            if c is not None:
                c.index.close()  # searches already running keep their snapshot (memory maps stay valid)
            shutil.rmtree(self._path(name), ignore_errors=True)
            (self.entries_dir / f"{name}.json").unlink(missing_ok=True)
