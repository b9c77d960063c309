"""Input checks shared by quantisers, the index and the server."""

from __future__ import annotations

import numpy as np

from .errors import DimensionMismatch, EmptyInput, InvalidCodes, InvalidInput, NonFiniteInput


def as_float_matrix(
    x: object, *, d: int | None = None, name: str = "x", allow_empty: bool = True
) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 (n, d) array or raise a typed error.

    Checks: numeric, exactly 2-D, the expected dimension ``d`` (when given),
    no NaN/inf, and (unless ``allow_empty``) at least one row.
    """
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name} is not convertible to an array: {exc}") from None
    if arr.dtype.kind not in "fiub":
        raise InvalidInput(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InvalidInput(f"{name} must be 2-D (n, d), got shape {arr.shape}")
    if d is not None and arr.shape[1] != d:
        raise DimensionMismatch(f"{name} has dimension {arr.shape[1]}, expected {d}")
    if arr.shape[0] == 0 and not allow_empty:
        raise EmptyInput(f"{name} is empty (0 rows)")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if out.size and not np.isfinite(out).all():
        bad = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise NonFiniteInput(f"{name} contains NaN or inf (first bad row: {bad})")
    return out


def as_code_matrix(codes: object, *, code_size: int, name: str = "codes") -> np.ndarray:
    """Return ``codes`` as a C-contiguous uint8 (n, code_size) array or raise ``InvalidCodes``."""
    arr = np.asarray(codes)
    if arr.dtype != np.uint8:
        raise InvalidCodes(f"{name} must be uint8, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InvalidCodes(f"{name} must be 2-D (n, code_size), got shape {arr.shape}")
    if arr.shape[1] != code_size:
        raise InvalidCodes(f"{name} have width {arr.shape[1]} bytes, expected code_size {code_size}")
    return np.ascontiguousarray(arr)


def as_ids(ids: object, n: int | None = None) -> np.ndarray:
    """Return ``ids`` (a scalar or 1-D array of non-negative integers; ``n`` of them when given) as uint64."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise InvalidInput(f"ids must be a 1-D array of non-negative integers, got shape {arr.shape} "
                           f"dtype {arr.dtype}")
    if arr.size and arr.dtype.kind == "i" and arr.min() < 0:
        raise InvalidInput("ids must be non-negative")
    if n is not None and arr.shape[0] != n:
        raise InvalidInput(f"got {arr.shape[0]} ids for {n} vectors")
    return arr.astype(np.uint64)
