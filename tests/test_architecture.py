"""The layering rules of docs/architecture.md, checked on the source so a break fails here.

Read from the code's own imports (``ast``), not from a list kept by hand: a new import that
reaches up a layer, or a module that reaches into another object's private attributes,
fails this test with the file and line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: lowest first; a package may import itself and the packages before it, nothing after it
LAYERS = ["device", "emulator", "control", "monitor", "scenarios", "webapp", "vmemlab",
          "benchmarks"]
#: imports a layer may never make, even though they are below it
FORBIDDEN = {
    "device": {"unicorn", "flask", "flask_socketio"},  # the device model is pure Python
    "emulator": {"flask", "flask_socketio"},
    "control": {"flask", "flask_socketio"},
    "monitor": {"flask", "flask_socketio"},
    "scenarios": {"flask", "flask_socketio"},
}


def _modules(package: str) -> Iterator[Path]:
    yield from sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


@pytest.mark.parametrize("package", LAYERS)
def test_imports_only_reach_down(package: str) -> None:
    allowed = set(LAYERS[: LAYERS.index(package) + 1])
    above = set(LAYERS) - allowed
    bad = []
    for path in _modules(package):
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top in above or top in FORBIDDEN.get(package, set()):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    assert not bad, "layering broken (docs/architecture.md):\n" + "\n".join(bad)


def _private_reaches(path: Path) -> Iterator[str]:
    """``obj._name`` where ``obj`` is not ``self``/``cls``: reaching into someone else."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
            yield f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}"


#: modules allowed to, and why: a class's own module using its private helpers through
#: another name, or a library that offers no public way to what we need
OWN_MODULE = {
    "device/virtio_mmio.py",  # the register table names the transport's setters
    "scenarios/patterns.py",  # its own Pattern's compiled form; google-re2's _Regexp type
    "emulator/native_stage2.py",  # unicorn's binding keeps the engine handle in Uc._uch
}


def test_no_module_reaches_into_private_attributes() -> None:
    bad = [hit for package in LAYERS for path in _modules(package)
           if str(path.relative_to(ROOT)) not in OWN_MODULE
           for hit in _private_reaches(path)]
    assert not bad, "private attributes used from outside:\n" + "\n".join(bad)


def test_no_class_is_over_500_lines() -> None:
    long = []
    for package in LAYERS:
        for path in _modules(package):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                    lines = node.end_lineno - node.lineno + 1
                    if lines > 500:
                        long.append(f"{path.relative_to(ROOT)}: {node.name} ({lines} lines)")
    assert not long, "classes over 500 lines:\n" + "\n".join(long)
