"""Imports point downward only: video < models < data < eval < lit < entry points (DESIGN's layers).

Every module of the package is parsed (imports inside functions count too), so a cycle between layers cannot
come back through a lazy import.
"""

import ast
from pathlib import Path

import pytest

import merv

PACKAGE = Path(merv.__file__).parent
LAYERS = ["video", "models", "data", "eval", "lit"]
"""Bottom to top; a module outside these folders (`merv/cli.py`, `merv/__init__.py`, …) is an entry point."""

MODULES = sorted(PACKAGE.rglob("*.py"))


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return len(LAYERS)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name == "merv" or name.startswith("merv.")]


def test_every_layer_has_modules():
    layers = {_layer(_module_name(p)) for p in MODULES}
    assert layers == set(range(len(LAYERS) + 1))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_module_imports_only_its_own_layer_or_below(path):
    own = _module_name(path)
    upward = [
        f"line {line}: {name} ({LAYERS[_layer(name)] if _layer(name) < len(LAYERS) else 'entry point'})"
        for line, name in _imports(path)
        if _layer(name) > _layer(own)
    ]
    assert not upward, f"{own} ({LAYERS[_layer(own)]}) imports from a layer above it: {upward}"


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from merv.lit import MERVLitModule\n")
    assert _imports(bad) == [(2, "merv.lit")]
    assert _layer("merv.lit") > _layer("merv.video.decode")
