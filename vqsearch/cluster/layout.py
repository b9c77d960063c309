"""The on-disk layout of a sharded collection under its ``root``.

```
root/
  cluster.json          shards, replicas, dim, metric, the index options every shard is created with, hash
  trained_state.bin     the state trained once on the driver (Index.trained_state), after the first write
  next_id.json          the next id the cluster assigns (reserved before a write is sent, never reused)
  shard-000/replica-0/  one Index directory per replica (on shared storage, or on each replica's node)
```

``cluster.json`` and ``trained_state.bin`` are written once; ``next_id.json`` grows.  Every file is
replaced atomically (temporary file, fsync, rename, fsync of the directory), so a crash leaves either the
old or the new content.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AlreadyExists, CorruptData, InvalidInput, NotFound
from .routing import HASH_SCHEME

LAYOUT_FILE = "cluster.json"
STATE_FILE = "trained_state.bin"
NEXT_ID_FILE = "next_id.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ClusterLayout:
    """What ``cluster.json`` records (immutable after :meth:`ShardedIndex.create`)."""

    dim: int
    shards: int
    replicas: int
    metric: str
    #: keyword arguments of :meth:`vqsearch.Index.create` for every replica (preset, scan, rescore, ivf, ...)
    index_options: dict[str, Any] = field(default_factory=dict)
    hash: str = HASH_SCHEME
    format: int = FORMAT_VERSION

    def replica_path(self, root: Path, shard: int, replica: int) -> Path:
        return Path(root) / f"shard-{shard:03d}" / f"replica-{replica}"


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def create_layout(root: Path, layout: ClusterLayout) -> None:
    """Create ``root`` with its ``cluster.json``; ``AlreadyExists`` if a collection is there."""
    root = Path(root)
    if (root / LAYOUT_FILE).exists():
        raise AlreadyExists(f"a sharded collection already exists at {root}")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise AlreadyExists(f"{root} exists and is not an empty directory")
    root.mkdir(parents=True, exist_ok=True)
    _write_atomic(root / LAYOUT_FILE, json.dumps(asdict(layout), indent=1, sort_keys=True).encode())


def read_layout(root: Path) -> ClusterLayout:
    path = Path(root) / LAYOUT_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"no sharded collection at {root} (no {LAYOUT_FILE})") from None
    except ValueError as exc:
        raise CorruptData(f"{path} is unreadable: {exc}") from None
    if int(raw.get("format", 0)) > FORMAT_VERSION:
        raise InvalidInput(f"{path} has format {raw.get('format')}, newer than this vqsearch supports")
    if raw.get("hash") != HASH_SCHEME:
        raise InvalidInput(f"{path} routes ids with {raw.get('hash')!r}; this vqsearch knows {HASH_SCHEME!r}")
    try:
        return ClusterLayout(**raw)
    except TypeError as exc:
        raise CorruptData(f"{path} has unexpected fields: {exc}") from None


def write_state(root: Path, state: bytes) -> None:
    _write_atomic(Path(root) / STATE_FILE, state)


def read_state(root: Path) -> bytes | None:
    """The trained state, or ``None`` before the collection was trained (it is validated when loaded)."""
    try:
        return (Path(root) / STATE_FILE).read_bytes()
    except FileNotFoundError:
        return None


def read_next_id(root: Path) -> int:
    try:
        return int(json.loads((Path(root) / NEXT_ID_FILE).read_text())["next_id"])
    except FileNotFoundError:
        return 0
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptData(f"{Path(root) / NEXT_ID_FILE} is unreadable: {exc}") from None


def write_next_id(root: Path, next_id: int) -> None:
    _write_atomic(Path(root) / NEXT_ID_FILE, json.dumps({"next_id": int(next_id)}).encode())
