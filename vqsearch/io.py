"""Reading vector files for the CLI: ``.npy``, ``.fvecs`` and Parquet with an embedding column.

Every reader yields ``(vectors float32 (b, d), metadata pyarrow.Table | None)`` batches, so files
larger than memory stream through :meth:`vqsearch.Index.add` (``.npy`` and ``.fvecs`` are
memory-mapped; Parquet is read batch by batch).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import CorruptData, InvalidInput, NotFound

Batch = tuple[np.ndarray, "object | None"]


def count_vectors(path: str | Path, column: str | None = None) -> tuple[int, int]:
    """(rows, dim) of a vector file without reading the vectors."""
    path = _existing(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, mmap_mode="r")
        _check_matrix(arr, path)
        return int(arr.shape[0]), int(arr.shape[1])
    if suffix == ".fvecs":
        arr = _fvecs(path)
        return int(arr.shape[0]), int(arr.shape[1] - 1)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        col = _embedding_column(pf.schema_arrow, column, path)
        first = next(pf.iter_batches(batch_size=1, columns=[col]), None)
        dim = 0 if first is None else len(first.column(0)[0])
        return int(pf.metadata.num_rows), dim
    raise InvalidInput(f"{path}: unsupported vector file type {suffix!r} (use .npy, .fvecs or .parquet)")


def read_vectors(path: str | Path, *, column: str | None = None, batch_size: int = 65_536,
                 columns: list[str] | None = None) -> Iterator[Batch]:
    """Yield (vectors, metadata) batches from ``path``; Parquet's other columns become metadata.

    ``columns``: Parquet columns to read (the embedding column must be among them; default all).
    """
    path = _existing(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, mmap_mode="r")
        _check_matrix(arr, path)
        for s in range(0, arr.shape[0], batch_size):
            yield np.asarray(arr[s:s + batch_size], dtype=np.float32), None
    elif suffix == ".fvecs":
        arr = _fvecs(path)
        for s in range(0, arr.shape[0], batch_size):
            yield np.ascontiguousarray(arr[s:s + batch_size, 1:]).view(np.float32), None
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        col = _embedding_column(pf.schema_arrow, column, path)
        for rb in pf.iter_batches(batch_size=batch_size, columns=columns):
            table = pa.Table.from_batches([rb])
            emb = table.column(col).combine_chunks()
            if emb.null_count:
                raise InvalidInput(f"{path}: column {col!r} has null embeddings")
            if pa.types.is_fixed_size_list(emb.type):
                dim = emb.type.list_size
                flat = emb.flatten()
            else:
                lengths = emb.value_lengths().to_numpy(zero_copy_only=False)
                if lengths.size and (lengths != lengths[0]).any():
                    raise InvalidInput(f"{path}: embeddings in column {col!r} have different lengths")
                dim = int(lengths[0]) if lengths.size else 0
                flat = emb.flatten()
            vecs = flat.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
            meta = table.drop_columns([col])
            yield vecs, (meta if meta.num_columns else None)
    else:
        raise InvalidInput(f"{path}: unsupported vector file type {suffix!r} (use .npy, .fvecs or .parquet)")


def column_names(path: str | Path) -> list[str]:
    """Columns of a Parquet file (``[]`` for ``.npy`` / ``.fvecs``, which hold vectors only)."""
    path = _existing(path)
    if path.suffix.lower() != ".parquet":
        return []
    import pyarrow.parquet as pq

    return list(pq.ParquetFile(path).schema_arrow.names)


def sample_vectors(path: str | Path, count: int, *, column: str | None = None, seed: int = 0) -> np.ndarray:
    """``count`` vectors drawn uniformly without replacement from the whole file (all if it has fewer).

    ``.npy`` / ``.fvecs`` are memory-mapped and indexed directly; Parquet is streamed once,
    reading only the embedding column.  Used to train quantisers on a sample that represents
    the file, rather than on its first rows (files are often sorted).
    """
    n, _ = count_vectors(path, column=column)
    rows = np.sort(np.random.default_rng(seed).choice(n, min(count, n), replace=False))
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, mmap_mode="r")
        return np.asarray(arr[rows], dtype=np.float32)
    if suffix == ".fvecs":
        return np.ascontiguousarray(_fvecs(path)[rows, 1:]).view(np.float32)
    parts, start = [], 0
    for vecs, _ in read_vectors(path, column=column, columns=[_embedding_name(path, column)]):
        lo, hi = np.searchsorted(rows, [start, start + vecs.shape[0]])
        if hi > lo:
            parts.append(vecs[rows[lo:hi] - start])
        start += vecs.shape[0]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _embedding_name(path: Path, column: str | None) -> str:
    import pyarrow.parquet as pq

    return _embedding_column(pq.ParquetFile(path).schema_arrow, column, path)


def _existing(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"vector file not found: {p}")
    return p


def _check_matrix(arr: np.ndarray, path: Path) -> None:
    if arr.ndim != 2 or arr.dtype.kind not in "fiu":
        raise InvalidInput(f"{path}: expected a 2-D numeric array, got shape {arr.shape} dtype {arr.dtype}")


def _fvecs(path: Path) -> np.ndarray:
    """``.fvecs``: each vector is an int32 dimension followed by that many float32 (as int32 here)."""
    raw = np.memmap(path, dtype=np.int32, mode="r")
    if raw.size == 0:
        raise CorruptData(f"{path}: empty .fvecs file")
    dim = int(raw[0])
    if dim < 1 or raw.size % (dim + 1):
        raise CorruptData(f"{path}: size {raw.size * 4} bytes is not a whole number of {dim}-d vectors")
    arr = raw.reshape(-1, dim + 1)
    if (arr[:, 0] != dim).any():
        raise CorruptData(f"{path}: inconsistent vector dimensions in the .fvecs headers")
    return arr


def _embedding_column(schema, column: str | None, path: Path) -> str:
    import pyarrow as pa

    if column is not None:
        if column not in schema.names:
            raise InvalidInput(f"{path}: no column {column!r}; columns: {schema.names}")
        return column
    lists = [f.name for f in schema if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
             or pa.types.is_large_list(f.type)]
    if len(lists) != 1:
        raise InvalidInput(f"{path}: name the embedding column with --column (list columns: {lists})")
    return lists[0]
