"""Row ids: validation of user-supplied ids and id lookups over a segment's sort order.

Ids are ``uint64``.  Every segment stores its ids unsorted (rows may be clustered by
another key) together with ``_id_order``, the permutation that sorts them, so a
lookup is a vectorised binary search through that permutation (no copy of the ids).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInput

U64_MAX = (1 << 64) - 1


def as_id_array(ids: object, *, name: str = "ids") -> np.ndarray:
    """Validate ids: a 1-D array (or scalar) of non-negative integers, returned as ``uint64``.

    Raises :class:`~vqsearch.errors.InvalidInput` for other shapes, non-integer dtypes or
    negative values.
    """
    try:
        arr = np.asarray(ids)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"{name} is not convertible to an array: {exc}") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InvalidInput(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.uint64)
    if arr.dtype.kind not in "iu":
        raise InvalidInput(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "i" and int(arr.min()) < 0:
        raise InvalidInput(f"{name} must be non-negative, got {int(arr.min())}")
    return np.ascontiguousarray(arr, dtype=np.uint64)


def as_cursor(after: object) -> int | None:
    """Validate a scroll cursor: ``None`` or an id in ``[0, 2**64 - 1]``."""
    if after is None:
        return None
    if isinstance(after, (bool, np.bool_)) or not isinstance(after, (int, np.integer)):
        raise InvalidInput(f"after must be an integer id or None, got {type(after).__name__} {after!r}")
    value = int(after)
    if not 0 <= value <= U64_MAX:
        raise InvalidInput(f"after must be an id in [0, 2**64 - 1], got {value}")
    return value


def unique_ids(ids: np.ndarray) -> np.ndarray:
    """Raise ``InvalidInput`` naming the duplicates if ``ids`` repeats a value."""
    if ids.shape[0] > 1:
        s = np.sort(ids)
        dup = np.unique(s[1:][s[1:] == s[:-1]])
        if dup.size:
            raise InvalidInput(f"duplicate ids in one batch ({dup.size}): {preview(dup)}")
    return ids


def find_sorted(ids: np.ndarray, order: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Row of each query in ``ids`` (or -1), by binary search through the permutation ``order``.

    ``ids[order]`` is strictly increasing.  Vectorised over queries, ``ceil(log2(n + 1))``
    gather steps, touching O(q log n) pages of the memory map instead of copying the
    sorted ids.
    """
    n = ids.shape[0]
    q = queries.shape[0]
    lo = np.zeros(q, dtype=np.int64)
    hi = np.full(q, n, dtype=np.int64)
    while True:
        active = lo < hi
        if not active.any():
            break
        mid = (lo + hi) >> 1
        v = ids[order[np.minimum(mid, n - 1)]]
        right = active & (v < queries)
        left = active & ~right
        lo = np.where(right, mid + 1, lo)
        hi = np.where(left, mid, hi)
    if n == 0:
        return np.full(q, -1, dtype=np.int64)
    rows = order[np.minimum(lo, n - 1)].astype(np.int64)
    found = (lo < n) & (ids[rows] == queries)
    return np.where(found, rows, -1)


def first_after(ids: np.ndarray, order: np.ndarray, after: int | None) -> int:
    """Position in ``order`` of the first id strictly greater than ``after`` (0 for ``None``)."""
    if after is None:
        return 0
    lo, hi = 0, ids.shape[0]
    while lo < hi:  # O(log n) scalar steps over the memory map
        mid = (lo + hi) >> 1
        if int(ids[order[mid]]) <= after:
            lo = mid + 1
        else:
            hi = mid
    return lo


def preview(ids: np.ndarray, limit: int = 10) -> str:
    """``[1, 2, 3, ...]``: the first ``limit`` ids of an array, for error messages."""
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    return f"[{shown}{', ...' if ids.size > limit else ''}]"


def as_padded_ids(ids: object, *, name: str = "ids") -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`as_id_array`, but negative entries (the -1 that pads search results) mean "no row".

    Returns ``(ids, present)``: uint64 ids (0 where absent) and the bool mask of real ids.
    """
    try:
        arr = np.asarray(ids)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"{name} is not convertible to an array: {exc}") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise InvalidInput(f"{name} must be a 1-D array of integers, got shape {arr.shape} dtype {arr.dtype}")
    if arr.dtype.kind == "u" or arr.size == 0:
        return np.ascontiguousarray(arr, dtype=np.uint64), np.ones(arr.shape[0], dtype=bool)
    present = arr >= 0
    return np.where(present, arr, 0).astype(np.uint64), present
