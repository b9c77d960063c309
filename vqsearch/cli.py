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
