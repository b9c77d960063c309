"""Bulk-build inputs (Parquet, Arrow IPC files, ``.npy``) cut into pieces that tasks read independently.

A piece is a row range of one file that a task can read without the rest of the file: a Parquet row group
(or a part of a large one), an Arrow IPC record batch, or a row range of a memory-mapped ``.npy`` array.
Planning reads only file footers and headers.  Vectors are a fixed-size (or plain) list column of floats in
Parquet/Arrow, or the whole 2-D array in ``.npy``; other columns are metadata, and an integer column named
``id_column`` (if present) gives the ids.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInput, NotFound

#: Rows per piece (a task's unit of reading and encoding).
PIECE_ROWS = 65_536
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow",
             ".npy": "npy"}


@dataclass(frozen=True)
class Piece:
    path: str
    kind: str  # "parquet" | "arrow" | "npy"
    part: int  # row group (parquet), record batch (arrow); unused for npy
    start: int  # first row within the part (npy: within the file)
    rows: int
    offset: int  # rows of all earlier pieces (position of the first row in the whole input)


def expand_inputs(inputs: str | os.PathLike | list) -> list[str]:
    """Files named by ``inputs``: a path, a directory (its input files, sorted), a glob, or a list of those."""
    items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    files: list[str] = []
    for item in items:
        text = os.fspath(item)
        if Path(text).is_dir():
            found = sorted(str(p) for p in Path(text).iterdir() if p.suffix.lower() in _SUFFIXES)
        elif any(ch in text for ch in "*?["):
            found = sorted(glob.glob(text))
        else:
            found = [text]
        if not found:
            raise NotFound(f"no input files at {text}")
        files.extend(found)
    for f in files:
        if Path(f).suffix.lower() not in _SUFFIXES:
            raise InvalidInput(f"{f}: unsupported input type (use {sorted(_SUFFIXES)})")
        if not Path(f).is_file():
            raise NotFound(f"input file {f} does not exist")
    return files


def plan_pieces(files: list[str], piece_rows: int = PIECE_ROWS) -> list[Piece]:
    """Cut the input files into pieces (file footers/headers only)."""
    pieces: list[Piece] = []
    offset = 0
    for path in files:
        kind = _SUFFIXES[Path(path).suffix.lower()]
        for part, rows in _parts(path, kind):
            for start in range(0, rows, piece_rows):
                n = min(piece_rows, rows - start)
                pieces.append(Piece(path, kind, part, start, n, offset))
                offset += n
    return pieces


def _parts(path: str, kind: str) -> list[tuple[int, int]]:
    if kind == "npy":
        arr = np.load(path, mmap_mode="r")
        if arr.ndim != 2:
            raise InvalidInput(f"{path}: a .npy input must be a 2-D array (n, dim), got shape {arr.shape}")
        return [(0, arr.shape[0])]
    if kind == "parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        return [(i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
    import pyarrow as pa

    with pa.memory_map(path) as source:
        reader = pa.ipc.open_file(source)
        return [(i, reader.get_batch(i).num_rows) for i in range(reader.num_record_batches)]


def input_schema(piece: Piece) -> Any:
    """The Arrow schema of a Parquet/Arrow input (``None`` for ``.npy``)."""
    if piece.kind == "npy":
        return None
    if piece.kind == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(piece.path).schema_arrow
    import pyarrow as pa

    with pa.memory_map(piece.path) as source:
        return pa.ipc.open_file(source).schema


def read_piece(piece: Piece, vector_column: str, columns: list[str] | None = None
               ) -> tuple[np.ndarray, Any]:
    """``(vectors float32 (rows, dim), table of the other requested columns or None)`` of one piece."""
    if piece.kind == "npy":
        arr = np.load(piece.path, mmap_mode="r")
        return np.ascontiguousarray(arr[piece.start:piece.start + piece.rows], dtype=np.float32), None
    wanted = [vector_column, *(columns or [])]
    if piece.kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        f = pq.ParquetFile(piece.path)
        if piece.start == 0 and piece.rows == f.metadata.row_group(piece.part).num_rows:
            table = f.read_row_group(piece.part, columns=wanted)
        else:  # part of a large row group: stream to it (bounded memory)
            batches, seen = [], 0
            for batch in f.iter_batches(batch_size=8192, row_groups=[piece.part], columns=wanted):
                lo, hi = max(piece.start - seen, 0), min(piece.start + piece.rows - seen, batch.num_rows)
                if hi > lo:
                    batches.append(batch.slice(lo, hi - lo))
                seen += batch.num_rows
                if seen >= piece.start + piece.rows:
                    break
            table = pa.Table.from_batches(batches)
    else:
        import pyarrow as pa

        with pa.memory_map(piece.path) as source:
            batch = pa.ipc.open_file(source).get_batch(piece.part).slice(piece.start, piece.rows)
            table = pa.Table.from_batches([batch]).select(wanted)
    vectors = vectors_of(table.column(vector_column), piece.path, vector_column)
    rest = table.drop_columns([vector_column]) if columns else None
    return vectors, rest


def vectors_of(column: Any, path: str, name: str) -> np.ndarray:
    """A list<float> / fixed_size_list<float> column as a float32 (n, dim) array."""
    import pyarrow as pa

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    t = column.type
    if not (pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)):
        raise InvalidInput(f"{path}: column {name!r} must be a list of floats (the vectors), got {t}")
    if column.null_count:
        raise InvalidInput(f"{path}: column {name!r} has null vectors")
    n = len(column)
    flat = column.flatten().to_numpy(zero_copy_only=False)
    if n and flat.size % n:
        raise InvalidInput(f"{path}: vectors in column {name!r} have different lengths")
    return np.ascontiguousarray(flat.reshape(n, -1 if n else 0), dtype=np.float32)


def input_dim(piece: Piece, vector_column: str) -> int:
    if piece.kind == "npy":
        return int(np.load(piece.path, mmap_mode="r").shape[1])
    x, _ = read_piece(Piece(piece.path, piece.kind, piece.part, piece.start, min(piece.rows, 1), 0),
                      vector_column)
    return int(x.shape[1])


def read_sample(pieces: list[Piece], size: int, vector_column: str, seed: int = 0) -> np.ndarray:
    """Up to ``size`` vectors drawn from the whole input (seeded): every row in input order when there are
    no more (what a single index's first ``add`` trains on); else random rows of ``.npy`` files, or all rows
    of randomly chosen pieces of other files, subsampled to ``size``."""
    rng = np.random.default_rng(seed)
    total = sum(p.rows for p in pieces)
    if total <= size:
        return np.concatenate([read_piece(p, vector_column)[0] for p in pieces])
    if all(p.kind == "npy" for p in pieces):
        rows = np.sort(rng.choice(total, size, replace=False))
        starts = np.array([p.offset for p in pieces])
        out = []
        for i, p in enumerate(pieces):
            sel = rows[(rows >= starts[i]) & (rows < starts[i] + p.rows)] - p.offset + p.start
            if sel.size:
                out.append(np.asarray(np.load(p.path, mmap_mode="r")[sel], dtype=np.float32))
        return np.concatenate(out)
    chunks, got = [], 0
    for i in rng.permutation(len(pieces)):
        x, _ = read_piece(pieces[i], vector_column)
        chunks.append(x)
        got += x.shape[0]
        if got >= size:
            break
    x = np.concatenate(chunks)
    if x.shape[0] > size:
        x = x[np.sort(rng.choice(x.shape[0], size, replace=False))]
    return x
