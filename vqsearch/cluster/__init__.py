"""Sharded collections on a Ray cluster (optional extra ``cluster``: ``pip install 'vqsearch[cluster]'``).

```python
import ray
from vqsearch.cluster import ShardedIndex

ray.init()                      # or ray.init(address="auto") on a cluster
sx = ShardedIndex.create("/shared/docs", dim=384, shards=4, replicas=2, metric="cosine")
sx.add(vectors, ids=ids); distances, ids = sx.search(queries, k=10)   # same calls and shapes as Index
```

Each replica of each shard is a Ray actor owning a :class:`vqsearch.Index` in its own directory; the
quantisers are trained once on the driver and every shard scores with the same codes, so a search merges
the shards' top-k exactly.  ``import vqsearch`` never imports Ray, and neither does importing this package:
Ray is loaded when a Ray-backed name is first used.
"""

from __future__ import annotations

from typing import Any

from .backend import CollectionBackend, LocalBackend, RayBackend, backend_for
from .errors import PartialWrite, ShardUnavailable

_LAZY = {"ShardedIndex": "sharded", "SearchResult": "result"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CollectionBackend", "LocalBackend", "PartialWrite", "RayBackend", "SearchResult", "ShardUnavailable",
           "ShardedIndex", "backend_for"]
