"""The ``vqsearch`` command line.  Thin shell over the Python API: parse, call, print."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from . import __version__
from .errors import VQSearchError

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


def _cmd_build(args: argparse.Namespace) -> int:
    """Create an index from a vector file, streaming it in batches with a progress bar."""
    from tqdm.auto import tqdm

    from .index import Index
    from .io import count_vectors, read_vectors

    n, dim = count_vectors(args.input, column=args.column)
    ivf = None if not args.ivf_nlist else {"nlist": args.ivf_nlist, "nprobe": args.nprobe}
    kwargs = {"scan": args.scan} if args.scan else {}
    if args.rescore:
        kwargs["rescore"] = None if args.rescore.lower() == "none" else args.rescore
    with Index.create(args.path, dim=dim, metric=args.metric, ivf=ivf, **kwargs) as index:
        with tqdm(total=n, unit="vec", desc="building", disable=args.quiet) as bar:
            for vectors, metadata in read_vectors(args.input, column=args.column, batch_size=args.batch):
                index.add(vectors, metadata=metadata)
                bar.update(len(vectors))
        stats = index.stats()
    print(json.dumps({k: stats[k] for k in ("count", "dim", "metric", "scan", "rescore", "bytes_per_vector",
                                            "segments", "version")}, indent=2))
    return 0


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

    queries = np.concatenate([v for v, _ in read_vectors(args.query_file, column=args.column)])
    flt = json.loads(args.filter) if args.filter else None
    with Index.open(args.path, read_only=True) as index:
        dist, ids = index.search(queries, k=args.k, filter=flt, oversample=args.oversample, nprobe=args.nprobe)
    if args.output:
        np.savez(args.output, distances=dist, ids=ids)
    else:
        for qi, (drow, irow) in enumerate(zip(dist, ids)):
            print(json.dumps({"query": qi, "ids": irow.tolist(), "distances": [round(float(x), 6) for x in drow]}))
    return 0


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
                             demo_debian=args.demo_debian, models_dir=args.models_dir, log_level=args.log_level)
    serve(settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vqsearch", description="Vector-quantised embedding search.")
    sub = p.add_subparsers(dest="command", required=True)

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

    s = sub.add_parser("build", help="create an index from a .npy, .fvecs or .parquet file")
    s.add_argument("path", help="index directory to create")
    s.add_argument("--input", required=True, help="vectors: .npy (n, d), .fvecs, or .parquet with an embedding column")
    s.add_argument("--column", default=None, help="Parquet embedding column (default: the only list column)")
    s.add_argument("--metric", default="cosine", choices=["cosine", "ip", "l2"])
    s.add_argument("--scan", default=None, help="scan quantiser spec (default: the index default)")
    s.add_argument("--rescore", default=None, help="rescore quantiser spec, or 'none'")
    s.add_argument("--ivf-nlist", type=int, default=0, help="IVF lists (0 = flat scan)")
    s.add_argument("--nprobe", type=int, default=32, help="default IVF lists probed per query")
    s.add_argument("--batch", type=int, default=65_536, help="vectors per write (each write is one commit)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_build)

    s = sub.add_parser("info", help="print an index's statistics and versions as JSON")
    s.add_argument("path")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("search", help="search an index with query vectors from a file")
    s.add_argument("path")
    s.add_argument("--query-file", required=True, help="queries: .npy, .fvecs or .parquet")
    s.add_argument("--column", default=None, help="Parquet embedding column of the query file")
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--filter", default=None, help='metadata filter as JSON, e.g. \'{"section": "python"}\'')
    s.add_argument("--oversample", type=int, default=None)
    s.add_argument("--nprobe", type=int, default=None)
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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VQSearchError as exc:
        print(f"vqsearch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `vqsearch info PATH | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
