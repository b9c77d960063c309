"""The built-in demo corpus: docstrings of the Python standard library.

Every installation has it, so ``vqsearch demo`` needs no download and no shared
data: each public function, class and method of a fixed list of stdlib modules
becomes one document ``"module.name: first paragraph of its docstring"``.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings

STDLIB_MODULES = (
    "argparse", "array", "ast", "asyncio", "base64", "bisect", "builtins", "bz2", "calendar", "cmath",
    "codecs", "collections", "colorsys", "concurrent.futures", "configparser", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "dis", "email", "enum", "filecmp", "fnmatch",
    "fractions", "ftplib", "functools", "gc", "getpass", "gettext", "glob", "graphlib", "gzip", "hashlib",
    "heapq", "hmac", "html", "html.parser", "http.client", "http.server", "imaplib", "inspect", "io",
    "ipaddress", "itertools", "json", "keyword", "locale", "logging", "logging.handlers", "lzma", "math",
    "mimetypes", "multiprocessing", "numbers", "operator", "os", "os.path", "pathlib", "pickle", "platform",
    "plistlib", "poplib", "pprint", "queue", "quopri", "random", "re", "reprlib", "sched", "secrets",
    "select", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib", "socket", "socketserver",
    "sqlite3", "ssl", "stat", "statistics", "string", "struct", "subprocess", "sys", "tarfile", "tempfile",
    "textwrap", "threading", "time", "timeit", "tokenize", "traceback", "types", "typing", "unicodedata",
    "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref",
    "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zlib", "zoneinfo",
)


def _first_paragraph(doc: str, limit: int = 300) -> str:
    para = inspect.cleandoc(doc).split("\n\n", 1)[0]
    para = re.sub(r"\s+", " ", para).strip()
    return para[:limit]


def python_docstrings(modules: tuple[str, ...] = STDLIB_MODULES) -> list[tuple[str, str]]:
    """``[(qualified name, "name: first docstring paragraph"), ...]``, deterministic order, no duplicates."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []

    def emit(name: str, obj: object) -> None:
        doc = inspect.getdoc(obj) if not isinstance(obj, str) else obj
        if not doc or name in seen:
            return
        text = _first_paragraph(doc)
        if len(text) < 12:
            return
        seen.add(name)
        out.append((name, f"{name}: {text}"))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for modname in modules:
            try:
                mod = importlib.import_module(modname)
            except ImportError:
                continue
            emit(modname, mod)
            for attr in sorted(getattr(mod, "__all__", None) or dir(mod)):
                if attr.startswith("_"):
                    continue
                obj = getattr(mod, attr, None)
                if obj is None or inspect.ismodule(obj):
                    continue
                if not (inspect.isclass(obj) or inspect.isroutine(obj)):
                    continue  # constants, enum members and other instances carry their type's doc
                owner = getattr(obj, "__module__", modname) or modname
                if modname != "builtins" and owner.split(".")[0] != modname.split(".")[0] \
                        and not owner.startswith("_"):
                    continue  # re-exported from another package
                emit(f"{modname}.{attr}", obj)
                if inspect.isclass(obj):
                    for meth in sorted(vars(obj)):
                        member = getattr(obj, meth, None)
                        if not meth.startswith("_") and inspect.isroutine(member):
                            emit(f"{modname}.{attr}.{meth}", member)
    return out
