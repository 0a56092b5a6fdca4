"""No import circles in python/embedserve.

Every `import` and `from ... import` a module of the package makes counts: at module level, and
inside functions too, since a function-local import is still a dependency (moving an import into
a function only hides a circle from the interpreter, not from whoever has to change the code).
Imports under `if TYPE_CHECKING:` are left out: they never run.

No import is exempt. The lazy ones that exist for start-up time (embedserve/__init__.py's and
server/__init__.py's `__getattr__`, the CLI's command modules) are counted like the rest and
close no circle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections import deque
from itertools import pairwise
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "embedserve"

# (importer, imported) -> line of the import in the importer.
Graph = dict[str, dict[str, int]]


def module_names(package: Path) -> dict[str, Path]:
    """Dotted name -> source file, for every module of `package` (compiled ones by their stub)."""
    names = {}
    for path in sorted(package.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.setdefault(".".join(parts), path)
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in `tree` outside `if TYPE_CHECKING:` bodies (their `else` counts)."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return found


def import_graph(package: Path) -> Graph:
    """Which of the package's modules each of its modules imports, and on which line."""
    names = module_names(package)
    graph: Graph = {name: {} for name in names}
    for name, path in names.items():
        if path.suffix != ".py":
            continue
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parent = here[: len(here) - (node.level - 1)]
                    base = ".".join([*parent, *([node.module] if node.module else [])])
                # `from a import b`: the module a.b when there is one, else a itself.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in names else base
                    for alias in node.names
                ]
            for target in targets:
                if target in names and target != name:
                    graph[name].setdefault(target, node.lineno)
    return graph


def _chain_back(graph: Graph, start: str) -> list[str] | None:
    """The shortest chain of imports from `start` back to itself, or None."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph[node]):
            if target == start:
                chain = [node]
                while chain[-1] != start:
                    chain.append(came_from[chain[-1]])
                return [start, *reversed(chain[:-1]), start]
            if target not in came_from:
                came_from[target] = node
                queue.append(target)
    return None


def cycles(graph: Graph) -> list[list[str]]:
    """One shortest circle through each module that is on one, each circle listed once."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    for start in sorted(graph):
        chain = _chain_back(graph, start)
        if chain is not None and frozenset(chain) not in seen:
            seen.add(frozenset(chain))
            found.append(chain)
    return found


def describe(chain: list[str], graph: Graph, package: Path) -> str:
    """The circle, then each import in it with the file and line that makes it."""
    names = module_names(package)
    steps = [
        f"  {a} -> {b}  ({names[a].relative_to(package.parent)}:{graph[a][b]})"
        for a, b in pairwise(chain)
    ]
    return " -> ".join(chain) + "\n" + "\n".join(steps)


def test_the_package_has_no_import_circle():
    graph = import_graph(PACKAGE)
    assert (
        len(graph) > 100 and "embedserve.models.static_int8" in graph["embedserve.models.variants"]
    )
    found = cycles(graph)
    assert not found, "import circles:\n" + "\n".join(describe(c, graph, PACKAGE) for c in found)


def test_dynamic_imports_are_the_known_lazy_table():
    # `importlib.import_module(name)` with a computed name is invisible to the graph above. The
    # one such call is embedserve.__getattr__'s, which loads the modules of its `_LAZY` table
    # for start-up time; checking them here keeps that table inside the rule.
    import embedserve

    callers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "import_module(" in path.read_text(encoding="utf-8")
    )
    assert callers == ["__init__.py"]
    graph = import_graph(PACKAGE)
    for target in set(embedserve._LAZY.values()):
        assert target in graph
        graph["embedserve"].setdefault(target, 0)
    assert not cycles(graph)


def _write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(textwrap.dedent(text))
    return package


def test_a_circle_through_a_function_local_and_a_relative_import_is_found(tmp_path):
    package = _write_package(
        tmp_path,
        {
            "a.py": "from pkg import b\nfrom pkg.d import helper\n",
            "b.py": "def f():\n    from pkg.c import x\n    return x\n",
            "c.py": "from . import a\nx = 1\n",
            "d.py": """\
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from pkg.a import something
                def helper():
                    pass
            """,
            "sub/__init__.py": "from ..a import b\n",
        },
    )
    graph = import_graph(package)
    assert graph["pkg.sub"] == {"pkg.a": 1}
    assert graph["pkg.d"] == {}  # the TYPE_CHECKING import is not an edge
    found = cycles(graph)
    assert found == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert "pkg.b -> pkg.c  (pkg/b.py:2)" in describe(found[0], graph, package)


@pytest.mark.parametrize(
    "text",
    [
        "import pkg.x\n",
        "from pkg import x\n",
        "from .x import thing\n",
        "try:\n    from pkg.x import y\nexcept ImportError:\n    pass\n",
    ],
)
def test_every_spelling_of_an_import_is_an_edge(tmp_path, text):
    package = _write_package(tmp_path, {"w.py": text, "x.py": "from pkg import w\n"})
    assert cycles(import_graph(package)) == [["pkg.w", "pkg.x", "pkg.w"]]


# Each module of the package's top level (and each subpackage) imported first, in one fresh
# interpreter: the package's own modules are dropped from sys.modules before each (its compiled
# ones, `_`-named, stay: an extension cannot be loaded twice). A circle through a subpackage's
# __init__ (which the graph above does not follow: re-exports make such edges everywhere) fails
# the first import of whichever module starts it, as `import embedserve.classification` did when
# tokenizer_pipeline imported embedserve.models, whose config imports tokenizer_pipeline.
FIRST_IMPORTS = """
import importlib, pkgutil, sys
import embedserve
names = sorted(
    m.name
    for m in pkgutil.iter_modules(embedserve.__path__, "embedserve.")
    if not m.name.rpartition(".")[2].startswith("_")
)
compiled = {n for n in sys.modules if n.rpartition(".")[2].startswith("_")}
for name in names:
    for loaded in [n for n in sys.modules if n.startswith("embedserve.") and n not in compiled]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as exc:
        print(f"{name}: {exc}")
print(len(names), "modules")
"""


def test_every_module_imports_first_in_a_fresh_interpreter():
    done = subprocess.run(
        [sys.executable, "-c", FIRST_IMPORTS],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    *failures, count = done.stdout.strip().splitlines()
    assert int(count.split()[0]) > 30 and failures == [], "\n".join(failures)
