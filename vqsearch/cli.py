"""The ``vqsearch`` command line.  Thin shell over the Python API: parse, call, print."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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


if __name__ == "__main__":
    sys.exit(main())
