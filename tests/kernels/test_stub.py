"""`_core.pyi` against the compiled module: the stub a type checker and an editor read must not
drift from csrc/bindings.cpp.

mypy's stubtest checks that every public name exists on both sides. pybind11 builtins carry no
`__text_signature__`, so stubtest cannot see their parameters; their docstrings' first line is
pybind11's own rendering of the bound signature, and the second test holds the stub's parameter
names, order and defaults to it.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from embedserve import _core

STUB = Path(_core.__file__).with_name("_core.pyi")


def test_stubtest_finds_no_drift():
    done = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "embedserve._core"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _stub_functions() -> dict[str, ast.FunctionDef]:
    tree = ast.parse(STUB.read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _stub_parameters(node: ast.FunctionDef) -> list[tuple[str, str | None]]:
    args = node.args.args
    defaults = [None] * (len(args) - len(node.args.defaults)) + node.args.defaults
    return [
        (arg.arg, None if default is None else ast.unparse(default))
        for arg, default in zip(args, defaults)
    ]


def _runtime_parameters(name: str) -> list[tuple[str, str | None]]:
    first = (getattr(_core, name).__doc__ or "").splitlines()[0]
    match = re.fullmatch(rf"{name}\((.*)\) -> .*", first)
    assert match, f"pybind11 signature line not found for {name}: {first!r}"
    parameters = []
    for part in filter(None, (p.strip() for p in match.group(1).split(", "))):
        head, _, default = part.partition(" = ")
        parameters.append((head.split(":")[0], default or None))
    return parameters


def test_every_compiled_function_has_a_stub_and_no_stub_is_extra():
    runtime = {name for name in dir(_core) if not name.startswith("_")}
    assert set(_stub_functions()) == runtime


@pytest.mark.parametrize("name", sorted(_stub_functions()))
def test_stub_parameters_match_the_binding(name):
    assert _stub_parameters(_stub_functions()[name]) == _runtime_parameters(name)
