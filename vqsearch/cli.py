"""The ``vqsearch`` command line.  Thin shell over the Python API: parse, call, print.

Every failure the user can cause ends in one line on stderr naming the flag involved and
exit status 2: argparse's own errors, values the commands check, and the library's typed
errors (whose Python argument names, such as ``overwrite=True``, are rewritten as the
command's flags).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from tqdm.auto import tqdm

from . import __version__
from .errors import VQSearchError


class CommandError(Exception):
    """A problem with the command line's input, reported as one line naming the flag."""

DEMO_QUERIES = (
    "read a file line by line",
    "parse command line options and arguments",
    "compute a cryptographic hash of some bytes",
    "sort items by a key function",
    "run a program in a separate process and capture its output",
    "format a date as a string",
    "compress data with gzip",
    "generate a random number from a normal distribution",
)


def _cmd_version(args: argparse.Namespace) -> int:
    print(__version__)
    return 0


def _cmd_quantizers(args: argparse.Namespace) -> int:
    from . import quantizers

    for name, desc in quantizers.available().items():
        print(f"{name:10s} {desc}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """Build an index over Python's own docstrings (embedded with MiniLM) and search it."""
    from .demo import run_demo

    run_demo(path=args.path, queries=args.query or DEMO_QUERIES, k=args.k, scan=args.scan,
             rescore=args.rescore, out=sys.stdout)
    return 0


def _cmd_warmup(args: argparse.Namespace) -> int:
    """Compile the search path's kernels into numba's cache, one line per configuration."""
    from .warmup import warmup

    def report(step) -> None:
        print(f"{step.preset:10s} {step.metric:7s} {'ivf' if step.ivf else 'flat':5s} {step.seconds:7.1f} s",
              flush=True)

    try:
        warmup(args.preset or ["default"], args.metric or ["cosine"], on_step=report)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    """Create an index from a vector file: train on a sample of the whole file, then add it in chunks."""
    from .index import Index
    from .io import count_vectors, read_vectors, sample_vectors

    n, dim = count_vectors(args.input, column=args.column)
    id_column = _id_column(args)
    kwargs: dict[str, Any] = {"metric": args.metric, "preset": args.preset,
                              "ivf": ivf_setting(args.ivf_nlist, args.nprobe, n)}
    if args.scan:
        kwargs["scan"] = args.scan
    if args.rescore:
        kwargs["rescore"] = None if args.rescore.lower() == "none" else args.rescore
    existed = Path(args.path).exists()
    try:
        with Index.create(args.path, dim=dim, **kwargs) as index:
            if n:  # train on rows spread over the whole file (its first batch may be sorted or small)
                sample = sample_vectors(args.input, min(n, _train_rows(dim)), column=args.column)
                if not args.quiet:
                    print(f"training on {sample.shape[0]:,} of {n:,} vectors ...", file=sys.stderr)
                index.train(sample)
            with tqdm(total=n, unit="vec", desc="building", disable=args.quiet) as bar:
                chunks = ChunkSizer(maximum=args.batch)
                for vectors, metadata in read_vectors(args.input, column=args.column, batch_size=args.batch):
                    ids, metadata = _split_ids(metadata, id_column, args.input)
                    add_in_chunks(index, vectors, ids, metadata, chunks, bar.update)
            index.compact()  # one segment (per 256 MiB) instead of the partial segments of small commits
            stats = index.stats()
    except BaseException:
        if not existed:  # a half-built index is no use, and would block the next attempt
            shutil.rmtree(args.path, ignore_errors=True)
        raise
    ivf = stats.get("ivf") or {}
    out = {k: stats[k] for k in ("count", "dim", "metric", "scan", "rescore", "bytes_per_vector", "segments",
                                 "version")}
    out["ivf_nlist"] = ivf.get("nlist")
    print(json.dumps(out, indent=2))
    return 0


#: Training sample: up to this many rows (the IVF k-means sample size) ...
TRAIN_ROWS = 262_144
#: ... and at most this many bytes of float32 vectors.
TRAIN_BYTES = 512 << 20


def _train_rows(dim: int) -> int:
    return max(1, min(TRAIN_ROWS, TRAIN_BYTES // (4 * dim)))


def ivf_setting(nlist: str, nprobe: int, n: int) -> dict | None:
    """The ``ivf`` argument for ``--ivf-nlist NLIST --nprobe NPROBE`` and a file of ``n`` vectors.

    ``auto`` sizes the lists for the whole file, as ``ivf="auto"`` does for the first batch
    of a Python ``add`` (the CLI trains on a sample, so the sample's size would undercount).
    """
    from . import IVFConfig

    if nlist == "none":
        return None
    lists = IVFConfig().resolved(n).nlist if nlist == "auto" else int(nlist)
    return {"nlist": lists, "nprobe": nprobe}


def _id_column(args: argparse.Namespace) -> str | None:
    """The column holding the ids: ``--id-column``, else a Parquet column named ``id``, else none (0, 1, ...)."""
    from .io import column_names

    names = column_names(args.input)
    if args.id_column is None:
        return "id" if "id" in names else None
    if not str(args.input).lower().endswith(".parquet"):
        raise CommandError("--id-column needs a Parquet input (.npy and .fvecs files hold vectors only)")
    if args.id_column not in names:
        raise CommandError(f"--id-column: {args.input} has no column {args.id_column!r}; columns: {names}")
    return args.id_column


def _split_ids(metadata: Any, column: str | None, path: str) -> tuple[np.ndarray | None, Any]:
    """(ids uint64 or None, the metadata without the id column)."""
    if column is None:
        return None, metadata
    import pyarrow as pa
    import pyarrow.compute as pc

    col = metadata.column(column)
    where = f"{path}: id column {column!r}"
    if not pa.types.is_integer(col.type):
        raise CommandError(f"{where} must hold integers, got {col.type} (choose another with --id-column)")
    if col.null_count:
        raise CommandError(f"{where} has {col.null_count} null(s)")
    if len(col) and pa.types.is_signed_integer(col.type) and pc.min(col).as_py() < 0:
        raise CommandError(f"{where} has negative values; ids must be non-negative")
    ids = np.asarray(col.to_numpy(), dtype=np.uint64)
    rest = metadata.drop_columns([column])
    return ids, (rest if rest.num_columns else None)


class ChunkSizer:
    """Rows per ``Index.add`` call so that each call takes about ``seconds`` (each call is one commit).

    Encoding speed differs by orders of magnitude between quantisers, so a fixed chunk either
    leaves the progress bar still for minutes or commits thousands of tiny segments.  The size
    starts small, follows the measured rate, and stays within ``[minimum, maximum]``.
    """

    def __init__(self, *, maximum: int, minimum: int = 1024, seconds: float = 1.0) -> None:
        self.minimum = min(minimum, maximum)
        self.maximum = maximum
        self.seconds = seconds
        self.size = self.minimum

    def record(self, rows: int, elapsed: float) -> None:
        rate = rows / max(elapsed, 1e-6)
        self.size = int(min(self.maximum, max(self.minimum, rate * self.seconds)))


def add_in_chunks(index: Any, vectors: np.ndarray, ids: np.ndarray | None, metadata: Any, sizer: ChunkSizer,
                  progress: Callable[[int], object]) -> None:
    """Add one batch read from the input in chunks sized by ``sizer``, reporting rows to ``progress``."""
    start, n = 0, vectors.shape[0]
    while start < n:
        stop = min(n, start + sizer.size)
        t0 = time.perf_counter()
        index.add(vectors[start:stop], ids=None if ids is None else ids[start:stop],
                  metadata=None if metadata is None else metadata.slice(start, stop - start), progress=False)
        sizer.record(stop - start, time.perf_counter() - t0)
        progress(stop - start)
        start = stop


def _cmd_info(args: argparse.Namespace) -> int:
    from .index import Index

    with Index.open(args.path, read_only=True) as index:
        stats = index.stats()
        stats["versions"] = [v._asdict() for v in index.versions()]
    print(json.dumps(stats, indent=2, default=str))
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from .index import Index
    from .io import read_vectors

    flt = _json_object(args.filter, "--filter")
    include = _column_list(args.include)
    if include is not None and args.output:
        raise CommandError("--include prints metadata in the JSON lines output; it cannot be combined with --output")
    queries = np.concatenate([v for v, _ in read_vectors(args.query_file, column=args.column)])
    with Index.open(args.path, read_only=True) as index:
        dist, ids = index.search(queries, k=args.k, filter=flt, oversample=args.oversample, nprobe=args.nprobe)
        meta = None if include is None else _hit_metadata(index, ids, include)
    if args.output:
        np.savez(args.output, distances=dist, ids=ids)
        return 0
    for qi, (drow, irow) in enumerate(zip(dist, ids)):
        line: dict[str, Any] = {"query": qi, "ids": irow.tolist(),
                                "distances": [round(float(x), 6) if np.isfinite(x) else None for x in drow]}
        if meta is not None:
            line["metadata"] = meta[qi]
        print(json.dumps(line, default=_json_value, ensure_ascii=False))
    return 0


def _hit_metadata(index: Any, ids: np.ndarray, columns: list[str]) -> list[list[dict | None]]:
    """Per query, per hit: the ``columns`` of the hit's row, or None for a padding id (-1)."""
    flat = ids.reshape(-1)
    real = flat >= 0
    rows: list[dict | None] = [None] * flat.size
    if real.any():
        table = index.get_metadata(flat[real].astype(np.uint64), columns, missing="null")
        for pos, row in zip(np.flatnonzero(real).tolist(), table.to_pylist()):
            rows[pos] = row if columns else {}
    k = ids.shape[1] if ids.ndim == 2 else 0
    return [rows[q * k:(q + 1) * k] for q in range(ids.shape[0])]


def _json_value(v: object) -> object:
    """JSON for the Arrow values json cannot encode (dates, bytes, decimals)."""
    if isinstance(v, (bytes, bytearray)):
        return base64.b64encode(bytes(v)).decode()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def _json_object(text: str | None, flag: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{flag} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CommandError(f"{flag} must be a JSON object, e.g. '{{\"section\": \"python\"}}', "
                           f"got {type(value).__name__}")
    return value


def _column_list(text: str | None) -> list[str] | None:
    """``--include a,b`` -> ["a", "b"]; ``--include ''`` -> [] (no column)."""
    if text is None:
        return None
    return [c.strip() for c in text.split(",") if c.strip()]


def _cmd_compact(args: argparse.Namespace) -> int:
    from .index import Index

    with Index.open(args.path) as index:
        before = index.stats()["segments"]
        index.compact()
        after = index.stats()
    print(json.dumps({"segments_before": before, "segments_after": after["segments"], "count": after["count"],
                      "version": after["version"]}))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP API (flags override ``VQSEARCH_*`` environment variables)."""
    from .server import Settings, serve

    settings = Settings.load(data_dir=args.data, host=args.host, port=args.port, api_keys=tuple(args.api_key or ()),
                             read_only_keys=tuple(args.read_only_key or ()), search_threads=args.search_threads,
                             demo_debian=args.demo_debian, models_dir=args.models_dir, log_level=args.log_level,
                             ray_address=args.ray_address)
    serve(settings)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``vqsearch build: error: argument --metric: invalid choice ...``)
    that records its options and puts itself in the namespace as ``command_parser`` (the innermost
    parser wins), so that errors raised while a command runs can name its flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.options: list[argparse.Action] = []
        super().__init__(*args, **kwargs)
        self.set_defaults(command_parser=self)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.options.append(action)
        return action

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _nlist(text: str) -> str:
    if text in ("auto", "none"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', 'none' or a number of lists, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto', 'none' or a number of lists, got {value}")
    return "none" if value == 0 else str(value)  # 0 meant "flat scan" before 'none' existed


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vqsearch", description="Vector-quantised embedding search.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("version", help="print the version")
    s.set_defaults(func=_cmd_version)

    s = sub.add_parser("quantizers", help="list the available quantisers")
    s.set_defaults(func=_cmd_quantizers)

    s = sub.add_parser("demo", help="index Python's docstrings with MiniLM embeddings and search them")
    s.add_argument("--path", default=None, help="index directory to create (default: a temporary one)")
    s.add_argument("--query", action="append", help="query text (repeatable; default: a built-in set)")
    s.add_argument("-k", type=int, default=5, help="results per query (default 5)")
    s.add_argument("--scan", default=None, help="scan quantiser spec (default: the index default)")
    s.add_argument("--rescore", default=None, help="rescore quantiser spec (default: the index default)")
    s.set_defaults(func=_cmd_demo)

    s = sub.add_parser("warmup", help="compile the search kernels ahead of the first request (numba's cache)")
    s.add_argument("--preset", action="append", help="preset to warm (repeatable; default: default)")
    s.add_argument("--metric", action="append", help="metric to warm (repeatable; default: cosine)")
    s.set_defaults(func=_cmd_warmup)

    s = sub.add_parser("build", help="create an index from a .npy, .fvecs or .parquet file")
    s.add_argument("path", help="index directory to create")
    s.add_argument("--input", required=True, help="vectors: .npy (n, d), .fvecs, or .parquet with an embedding column")
    s.add_argument("--column", default=None, help="Parquet embedding column (default: the only list column)")
    s.add_argument("--id-column", default=None, metavar="NAME",
                   help="Parquet column holding the ids (default: a column named 'id' if there is one, "
                        "else ids 0, 1, 2, ...); the other columns become metadata")
    s.add_argument("--preset", default="default", help="named settings: default, compact or accurate "
                                                        "(explicit --scan/--rescore win)")
    s.add_argument("--metric", default="cosine", choices=["cosine", "ip", "l2"])
    s.add_argument("--scan", default=None, help="scan quantiser spec (default: the preset's)")
    s.add_argument("--rescore", default=None, help="rescore quantiser spec, or 'none' (default: the preset's)")
    s.add_argument("--ivf-nlist", type=_nlist, default="auto", metavar="auto|none|N",
                   help="IVF lists: 'auto' (default; 4·√n rounded to a power of two, one list below "
                        "100,000 vectors), 'none' for a flat scan, or a number")
    s.add_argument("--nprobe", type=int, default=0, help="default IVF lists probed per query (0 = a quarter)")
    s.add_argument("--batch", type=_positive_int, default=65_536,
                   help="largest number of vectors per write (each write is one commit; smaller writes are "
                        "sized to about one second of encoding, so the progress bar moves)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_build)

    s = sub.add_parser("info", help="print an index's statistics and versions as JSON")
    s.add_argument("path")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("search", help="search an index with query vectors from a file")
    s.add_argument("path")
    s.add_argument("--query-file", required=True, help="queries: .npy, .fvecs or .parquet")
    s.add_argument("--column", default=None, help="Parquet embedding column of the query file")
    s.add_argument("-k", type=_positive_int, default=10)
    s.add_argument("--filter", default=None, help='metadata filter as JSON, e.g. \'{"section": "python"}\'')
    s.add_argument("--include", default=None, metavar="COLS",
                   help="comma-separated metadata columns to print with each hit (null for padding ids)")
    s.add_argument("--oversample", type=_positive_int, default=None)
    s.add_argument("--nprobe", type=_positive_int, default=None)
    s.add_argument("--output", default=None, help="write distances/ids to this .npz instead of printing JSON lines")
    s.set_defaults(func=_cmd_search)

    s = sub.add_parser("compact", help="merge small segments and drop deleted rows")
    s.add_argument("path")
    s.set_defaults(func=_cmd_compact)

    s = sub.add_parser("serve", help="run the HTTP API (FastAPI + uvicorn)")
    s.add_argument("--data", default=None, help="data directory (env VQSEARCH_DATA_DIR)")
    s.add_argument("--host", default=None, help="bind address (default 127.0.0.1; others need an API key)")
    s.add_argument("--port", type=int, default=None, help="TCP port (default 8000)")
    s.add_argument("--api-key", action="append", help="admin bearer key (repeatable; env VQSEARCH_API_KEYS)")
    s.add_argument("--read-only-key", action="append",
                   help="read-only bearer key (repeatable; env VQSEARCH_READ_ONLY_KEYS)")
    s.add_argument("--search-threads", type=int, default=None, help="search worker threads (default 8)")
    s.add_argument("--demo-debian", default=None, metavar="DIR",
                   help="serve the Debian-MiniLM set in DIR (texts.parquet + base.f16.npy) as collection 'debian'")
    s.add_argument("--models-dir", default=None, metavar="DIR",
                   help="directory of compressed models served under /v1/models (env VQSEARCH_MODELS_DIR)")
    s.add_argument("--log-level", default=None, help="log level (default info)")
    s.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="keep collections as sharded indexes on this Ray cluster ('auto' = the cluster this "
                        "machine belongs to; env VQSEARCH_RAY_ADDRESS; needs the cluster extra)")
    s.set_defaults(func=_cmd_serve)

    # weights: compress | decompress | info.  Handlers turn the Namespace into typed API arguments here.
    def _weights_compress(a: argparse.Namespace) -> int:
        from . import weights

        texts = None
        if a.calibration:
            with open(a.calibration, encoding="utf-8") as fh:
                texts = [line.strip() for line in fh if line.strip()][: a.calibration_limit]
        fmt: str | dict[str, str] | None = a.format
        if a.pin:
            fmt = dict(p.split("=", 1) for p in a.pin) | ({"*": a.format} if a.format else {})
        res = weights.compress(a.src, a.dst, format=fmt, target_bits=a.target_bits, allocate=a.allocate,
                               calibration=texts, shard_size=int(a.shard_mb * (1 << 20)), damp=a.damp,
                               seed=a.seed, overwrite=a.overwrite, progress=not a.quiet)
        print(json.dumps({"path": str(res.path), "tensors": len(res.tensors), "params": res.total_params,
                          "bits_per_param": round(res.bits_per_param, 4), "bytes": res.bytes_on_disk,
                          "seconds": round(res.seconds or 0.0, 2)}))
        return 0

    def _weights_decompress(a: argparse.Namespace) -> int:
        from . import weights

        print(weights.decompress(a.src, a.out, dtype=a.dtype))
        return 0

    def _weights_info(a: argparse.Namespace) -> int:
        from . import weights

        res = weights.info(a.path)
        print(json.dumps(res.to_dict(), indent=1, default=str) if a.json else res.table())
        return 0

    w = sub.add_parser("weights", help="compress, decompress and inspect model weights (safetensors)")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    s = wsub.add_parser("compress", help="safetensors model -> Arrow shards (resumable)")
    s.add_argument("src", help="model.safetensors, a *.safetensors.index.json, or their folder")
    s.add_argument("dst", help="output directory")
    s.add_argument("--format", default=None, help="weight format of every 2-D tensor (default e8p:bits=2)")
    s.add_argument("--pin", action="append", metavar="GLOB=FORMAT", help="per-tensor format (repeatable)")
    s.add_argument("--target-bits", type=float, default=None, help="average bits/parameter: allocate formats")
    s.add_argument("--allocate", choices=["fisher", "proxy"], default=None,
                   help="allocation sensitivity (default: fisher with --calibration, else proxy)")
    s.add_argument("--calibration", default=None, metavar="TEXTS",
                   help="text file, one calibration text per line (LDLQ + Fisher statistics)")
    s.add_argument("--calibration-limit", type=int, default=256, help="use at most this many texts")
    s.add_argument("--shard-mb", type=float, default=256, help="shard size bound in MiB (default 256)")
    s.add_argument("--damp", type=float, default=0.01, help="LDLQ relative damping (default 0.01)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true", help="replace a different job found in DST")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_weights_compress)
    s = wsub.add_parser("decompress", help="compressed model -> one safetensors file")
    s.add_argument("src", help="compressed model directory")
    s.add_argument("out", help="output .safetensors file")
    s.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    s.set_defaults(func=_weights_decompress)
    s = wsub.add_parser("info", help="per-tensor format, bits, SQNR and statistics")
    s.add_argument("path", help="compressed model directory")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=_weights_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: _Parser = args.command_parser
    try:
        return int(args.func(args) or 0)
    except (CommandError, VQSearchError) as exc:
        message = _with_flag_names(str(exc), command.options)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `vqsearch info PATH | head`
        sys.stderr.close()
        return 0
    except OSError as exc:  # unreadable input, no space left ...: the OS message names the file
        message = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    except Exception as exc:
        if not type(exc).__module__.startswith("pyarrow"):
            raise  # a bug: keep the traceback
        message = f"could not read the input: {exc}"
    print(f"{command.prog}: error: {message}", file=sys.stderr)
    return 2


def _with_flag_names(message: str, options: list[argparse.Action]) -> str:
    """Rewrite Python argument names in a library message as this command's flags.

    ``pass overwrite=True`` -> ``pass --overwrite``; ``k=10 exceeds ...`` -> ``-k 10 exceeds ...``;
    ``preset must be ...`` -> ``--preset must be ...``.  Only names of the command's own options are
    touched, and only in those two forms.
    """
    for action in options:
        if not action.option_strings or action.dest == "help":
            continue
        flag = max(action.option_strings, key=len)
        dest = re.escape(action.dest)
        if action.nargs == 0:  # store_true: "overwrite=True" -> "--overwrite"
            message = re.sub(rf"(?<![\w-]){dest}=True\b", flag, message)
        else:
            message = re.sub(rf"(?<![\w-]){dest}=(?=\S)", f"{flag} ", message)
        message = re.sub(rf"^{dest}(?= must\b)", flag, message)
    return message


if __name__ == "__main__":
    sys.exit(main())
