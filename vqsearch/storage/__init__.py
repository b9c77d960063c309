"""Storage layer: durable, versioned, memory-mapped Arrow segments (files, not maths).

>>> from vqsearch.storage import Store, StoreConfig
>>> # store = Store.create(path, StoreConfig(code_columns={"scan": 56}, dim=384))

Everything other layers use is exported here.  See :mod:`vqsearch.storage.store` for the
layout and the durability guarantee, :mod:`vqsearch.storage.commit` for the commit
protocol, :mod:`vqsearch.storage.segment` for the segment format and
:mod:`vqsearch.storage.filters` for the filter language.
"""

from __future__ import annotations

from ._fsutil import atomic_write
from .blobs import SkippedFile
from .config import Layout, StoreConfig, StorePolicy
from .filters import ID_FIELD, OPERATORS, CompiledFilter, compile_filter
from .ids import as_id_array
from .schema import TEXT_COLUMN
from .scroll import MAX_SCROLL_LIMIT, ScrollPage
from .snapshot import Rows, SegmentView, Snapshot
from .store import Store, VersionInfo

__all__ = [
    "ID_FIELD",
    "MAX_SCROLL_LIMIT",
    "OPERATORS",
    "TEXT_COLUMN",
    "CompiledFilter",
    "Layout",
    "Rows",
    "ScrollPage",
    "SegmentView",
    "SkippedFile",
    "Snapshot",
    "Store",
    "StoreConfig",
    "StorePolicy",
    "VersionInfo",
    "as_id_array",
    "atomic_write",
    "compile_filter",
]
