"""A trained index state as one portable blob, and vectors encoded with it.

"Train once, encode everywhere": :meth:`Index.trained_state` packs the settings that training fixed (the
resolved config) and the fitted quantiser and IVF states into bytes (:func:`pack_state`);
:meth:`Index.load_trained_state` gives another, empty index exactly that state (:func:`adopt_state` checks
that it fits).  Indexes sharing a state score with the same codes, so their scores are comparable and
:class:`EncodedVectors` made by one (:meth:`Index.encode`) can be added to any other.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CorruptData, InvalidInput
from .config import IndexConfig

_MAGIC = b"VQSTATE1"
_HEAD = struct.Struct("<8sQ")  # magic, header length
_DIGEST = 32  # sha256 of everything before it


def pack_state(config: dict[str, Any], blobs: dict[str, bytes]) -> bytes:
    """``config`` (JSON) and named blobs → one checksummed byte string."""
    names = sorted(blobs)
    header = json.dumps({"config": config, "blobs": [[n, len(blobs[n])] for n in names]},
                        sort_keys=True).encode()
    body = b"".join([_HEAD.pack(_MAGIC, len(header)), header, *(blobs[n] for n in names)])
    return body + hashlib.sha256(body).digest()


def unpack_state(state: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Inverse of :func:`pack_state`; ``CorruptData`` for anything truncated, altered or not a state."""
    if not isinstance(state, (bytes, bytearray, memoryview)):
        raise InvalidInput(f"a trained state must be bytes, got {type(state).__name__}")
    state = bytes(state)
    if len(state) < _HEAD.size + _DIGEST or state[:len(_MAGIC)] != _MAGIC:
        raise CorruptData("not a vqsearch trained state (bad magic or too short)")
    body, digest = state[:-_DIGEST], state[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise CorruptData("trained state does not match its sha256 (truncated or corrupted)")
    _, header_len = _HEAD.unpack_from(body)
    try:
        header = json.loads(body[_HEAD.size:_HEAD.size + header_len])
        pos = _HEAD.size + header_len
        blobs = {}
        for name, size in header["blobs"]:
            blobs[str(name)] = body[pos:pos + int(size)]
            pos += int(size)
        config = dict(header["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptData(f"trained state header is unreadable: {exc}") from None
    if pos != len(body):
        raise CorruptData("trained state blob sizes do not add up")
    return config, blobs


def state_id(state: bytes) -> str:
    """Short content hash naming a trained state (equal states, equal ids)."""
    return hashlib.sha256(state).hexdigest()[:32]


#: Settings a trained state must share with the index that adopts it (the codes depend on them).
MATCHING_SETTINGS = ("dim", "metric", "scan", "rescore", "residual")


def adopt_state(state: bytes, mine: IndexConfig) -> tuple[IndexConfig, dict[str, bytes]]:
    """The config and blobs an untrained index with settings ``mine`` takes from ``state``.

    The state must come from an index created with the same :data:`MATCHING_SETTINGS` and IVF-or-not
    (``InvalidInput`` otherwise); its resolved IVF lists and default ``oversample`` are adopted.
    """
    config, blobs = unpack_state(state)
    try:
        theirs = IndexConfig.from_json(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptData(f"trained state has an unreadable index config: {exc}") from None
    for name in MATCHING_SETTINGS:
        if getattr(theirs, name) != getattr(mine, name):
            raise InvalidInput(f"trained state has {name}={getattr(theirs, name)!r}, this index "
                               f"{name}={getattr(mine, name)!r}")
    if (theirs.ivf is None) != (mine.ivf is None):
        raise InvalidInput(f"trained state has ivf={theirs.ivf}, this index ivf={mine.ivf}")
    return theirs, blobs


@dataclass(frozen=True)
class EncodedVectors:
    """Rows encoded by :meth:`Index.encode`, ready for :meth:`Index.add` / :meth:`Index.upsert` on any index
    with the same trained state (``state_id``).  Encoding is the expensive part of a write, so it can run
    elsewhere (another process or machine) and be committed later; the arrays pickle as plain numpy."""

    state_id: str
    #: quantiser code columns, uint8 (n, code_size) each
    columns: dict[str, np.ndarray]
    #: per-row derived columns the search needs (IVF list, exact norms), (n,) each
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = {a.shape[0] for a in (*self.columns.values(), *self.extra.values())}
        if not self.columns or len(sizes) != 1:
            raise InvalidInput(f"encoded columns must be non-empty and of equal length, got lengths {sorted(sizes)}")

    def __len__(self) -> int:
        return int(next(iter(self.columns.values())).shape[0])

    def require_state(self, expected: str | None) -> None:
        """Raise ``InvalidInput`` unless these rows were encoded with the trained state ``expected``."""
        if expected is None:
            raise InvalidInput("encoded vectors need a trained index; call load_trained_state() first")
        if self.state_id != expected:
            raise InvalidInput("vectors were encoded with another trained state than this index's")

    def take(self, rows: np.ndarray) -> EncodedVectors:
        """The encoded rows at positions ``rows`` (e.g. the rows routed to one shard)."""
        return EncodedVectors(self.state_id, {k: v[rows] for k, v in self.columns.items()},
                              {k: v[rows] for k, v in self.extra.items()})

    @classmethod
    def concat(cls, parts: list[EncodedVectors]) -> EncodedVectors:
        """One batch from several encoded with the same state (so that they commit together)."""
        if not parts:
            raise InvalidInput("nothing to concatenate")
        if len({p.state_id for p in parts}) != 1:
            raise InvalidInput("encoded batches come from different trained states")
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        return cls(first.state_id, {k: np.concatenate([p.columns[k] for p in parts]) for k in first.columns},
                   {k: np.concatenate([p.extra[k] for p in parts]) for k in first.extra})
