"""Collections on disk: one :class:`vqsearch.Index` per collection plus a small registry file.

Layout of the data directory::

    <data>/collections.json         registry: name -> per-collection settings (embedder, created)
    <data>/collections/<name>/      the collection's index (see vqsearch.storage)
    <data>/tmp/                     spooled upload bodies (emptied at startup)

The registry file is replaced atomically (temp file, fsync, rename, fsync directory),
so a crash leaves either the old or the new registry.  A collection exists once its
name is in the registry: create writes the index first and the registry entry last,
drop removes the entry first and the directory last, so a crash in between leaves
only an orphan directory, which the next create of that name removes.
"""

from __future__ import annotations

import json
import logging
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
from ..storage._fsutil import atomic_write
from .embedders import Embedder, EmbedderFactory

LOG = logging.getLogger(__name__)

REGISTRY_FILE = "collections.json"
REGISTRY_FORMAT = 1
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidInput(f"collection names are 1-64 characters [A-Za-z0-9_.-] starting with a letter or digit, "
                           f"got {name!r}")
    return name


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
        self._broken: dict[str, str] = {}
        self._mutex = threading.RLock()

    # ------------------------------------------------------------ paths
    @property
    def collections_dir(self) -> Path:
        return self.root / "collections"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def _path(self, name: str) -> Path:
        return self.collections_dir / check_name(name)

    # ------------------------------------------------------------ lifecycle
    def open_all(self) -> None:
        """Create the layout if needed and reopen every registered collection (startup)."""
        with self._mutex:
            self.collections_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            self._entries = self._read()
            for name, entry in sorted(self._entries.items()):
                try:
                    index = Index.open(self._path(name))
                except VQSearchError as exc:
                    LOG.error("collection %r could not be opened: %s", name, exc)
                    self._broken[name] = str(exc)
                    continue
                self._collections[name] = self._make(name, index, entry)
            LOG.info("opened %d collection(s) from %s", len(self._collections), self.root)

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
            return {}
        try:
            doc = json.loads(path.read_text())
            if int(doc.get("format", 0)) > REGISTRY_FORMAT:
                raise InvalidInput(f"{path} has format {doc.get('format')}, newer than this server supports")
            return {str(k): dict(v) for k, v in doc["collections"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"collection registry {path} is unreadable: {exc}") from None

    def _write(self) -> None:
        doc = {"format": REGISTRY_FORMAT, "collections": self._entries}
        atomic_write(self.root / REGISTRY_FILE, json.dumps(doc, indent=1, sort_keys=True).encode())

    # ------------------------------------------------------------ queries
    def get(self, name: str) -> Collection:
        c = self._collections.get(name)
        if c is None:
            broken = self._broken.get(name)
            if broken is not None:
                raise NotFound(f"collection '{name}' could not be opened at startup: {broken}")
            raise NotFound(f"collection '{name}' does not exist")
        return c

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
               embedder: str | None = None, options: Mapping[str, Any] | None = None) -> Collection:
        """Create a collection (index directory, then registry entry); raises ``AlreadyExists``.

        ``options`` are :meth:`vqsearch.Index.create` arguments (scan, rescore, ivf, oversample, residual);
        those left out come from ``preset``.
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
                raise AlreadyExists(f"collection '{name}' already exists")
            path = self._path(name)
            if path.exists():
                LOG.warning("removing orphan index directory %s (left by an interrupted create or drop)", path)
                shutil.rmtree(path)
            index = Index.create(path, dim=dim, metric=metric, preset=preset, **dict(options or {}))
            entry = {"embedder": embedder, "created": time.time()}
            self._entries[name] = entry
            try:
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
