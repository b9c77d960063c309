"""Layers talk through public interfaces: no module of vqsearch/, kernels/ or server/ reads another layer's
``_private`` names.

A *layer* is a subpackage of ``vqsearch`` (``vqsearch.index``, ``vqsearch.quantizers``, ``vqsearch.storage``,
``vqsearch.weights``, ...; ``kernels/`` is ``vqsearch.kernels`` and ``server/`` is ``vqsearch.server``), or a
top-level module of ``vqsearch`` on its own.  The check parses every module (no imports) and reports:

* **private modules** imported from outside the package that owns them (``from ..storage._fsutil import x``
  in ``vqsearch.index``); a package's private modules are open to everything inside that package, so
  ``vqsearch._validation`` serves all of ``vqsearch``;
* **private names** imported from another layer's module (``from ..index.index import _topk_of``);
* **private attributes** read on anything but ``self``/``cls`` (``q._d_work``) whose name no module of the
  reader's own layer defines (as a function, class, assignment target or slot).  Attribute names are
  matched by name, not by type: a layer that defines ``_x`` itself may read ``other._x``.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from vqtest_data import REPO_ROOT

#: Top-level source folders and the package name each is installed as.
SOURCES = {"vqsearch": "vqsearch", "kernels": "vqsearch.kernels", "server": "vqsearch.server"}

#: Private-looking names that are public API elsewhere (namedtuple methods, sys/os functions).
ALLOWED_ATTRIBUTES = {"_replace", "_asdict", "_fields", "_make", "_field_defaults", "_getframe", "_exit"}

#: Known violations in code other helpers own, to be removed by them (owner in the comment).  It only shrinks:
#: test_known_exceptions_are_still_needed fails once a listed read is gone.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO_ROOT)
    parts = [SOURCES[rel.parts[0]], *rel.parts[1:]]
    parts[-1] = parts[-1][:-3]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts).replace("vqsearch.kernels.kernels", "vqsearch.kernels")


def layer_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])  # vqsearch.<subpackage> or vqsearch.<top-level module>


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def source_files() -> list[Path]:
    return sorted(p for folder in SOURCES for p in (REPO_ROOT / folder).rglob("*.py"))


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """Absolute module name of a ``from ... import`` statement."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def defined_private_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__slots__"
                                                  for t in node.targets):
            names.update(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)
                         and isinstance(c.value, str))
    return {n for n in names if is_private(n)}


@functools.cache
def violations() -> list[tuple[str, str, str]]:
    """(file:line, name, what) for every read of another layer's private name."""
    parsed = {}
    for path in source_files():
        parsed[path] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    defined: dict[str, set[str]] = {}
    for path, tree in parsed.items():
        defined.setdefault(layer_of(module_name(path)), set()).update(defined_private_names(tree))
    found = []
    for path, tree in parsed.items():
        module = module_name(path)
        layer = layer_of(module)
        where = str(path.relative_to(REPO_ROOT))
        for node in ast.walk(tree):
            imported: list[tuple[str, str]] = []  # (absolute module, imported name or "")
            if isinstance(node, ast.Import):
                imported = [(alias.name, "") for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = resolve(module, path.name == "__init__.py", node)
                imported = [(source, alias.name) for alias in node.names]
            for source, name in imported:
                parts = source.split(".")
                for i, part in enumerate(parts):  # a private module: open only inside its package
                    owner = ".".join(parts[:i])
                    if is_private(part) and not (module == owner or module.startswith(owner + ".")):
                        found.append((f"{where}:{node.lineno}", source, "private module"))
                if name and is_private(name) and source.startswith("vqsearch") and layer_of(source) != layer:
                    found.append((f"{where}:{node.lineno}", f"{source}.{name}", "private name"))
            if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and is_private(node.attr)
                    and node.attr not in ALLOWED_ATTRIBUTES
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                    and not (isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                             and node.value.func.id == "super")
                    and node.attr not in defined.get(layer, set())):
                found.append((f"{where}:{node.lineno}", node.attr, "private attribute"))
    return found


def test_checker_finds_the_reads_it_should(tmp_path) -> None:
    """The check itself, on the three kinds of reads (so that an empty result means something)."""
    tree = ast.parse("from ..storage._fsutil import fsync\nfrom ..quantizers.base import _fmt\nq._d_work\n"
                     "self._mine\n")
    assert "_d_work" not in defined_private_names(tree) and "_mine" not in defined_private_names(tree)
    assert defined_private_names(ast.parse("class A:\n    __slots__ = ('_a',)\n    def _b(self):\n"
                                           "        self._c = 1\n")) == {"_a", "_b", "_c"}
    node = tree.body[0]
    assert isinstance(node, ast.ImportFrom)
    assert resolve("vqsearch.index.index", False, node) == "vqsearch.storage._fsutil"
    assert layer_of("vqsearch.index.searcher") == "vqsearch.index"
    assert module_name(REPO_ROOT / "kernels" / "popcount.py") == "vqsearch.kernels.popcount"
    assert module_name(REPO_ROOT / "server" / "__init__.py") == "vqsearch.server"


def test_no_layer_reads_another_layers_private_names() -> None:
    found = [v for v in violations() if (v[0].split(":")[0], v[1]) not in KNOWN_EXCEPTIONS]
    assert found == [], "reads of another layer's private names:\n" + "\n".join(
        f"  {where}: {name} ({what})" for where, name, what in found)


def test_known_exceptions_are_still_needed() -> None:
    """An exception whose violation is gone must leave the list (it only shrinks)."""
    present = {(v[0].split(":")[0], v[1]) for v in violations()}
    stale = sorted(KNOWN_EXCEPTIONS - present)
    assert stale == [], f"remove these from KNOWN_EXCEPTIONS: {stale}"
