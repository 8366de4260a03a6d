"""The package's layers point one way: data <- features <- models <- eval <- pipeline <- entry
points, and no module grows into a room of its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "multirec"

# lower number = lower layer; a module may import its own layer and those below it
LAYERS = {
    "errors": 0,
    "io": 0,
    "config": 0,
    "cli": 0,
    "runtime": 0,
    "tracking": 0,
    "data": 1,
    "features": 2,
    "models": 3,
    "baselines": 3,
    "eval": 4,
    "pipeline": 5,
    "reporting": 6,
}
ENTRY = 7  # entry points (multirec/<name>.py) and benchmarks
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def layer_of(module: str) -> int:
    parts = module.split(".")
    if parts[0] != "multirec" or len(parts) == 1:
        return -1
    return LAYERS.get(parts[1], ENTRY)


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    own = layer_of(module_name(path))
    upward = [
        f"line {line}: {name}"
        for name, line in imports(path)
        if name.startswith("multirec") and layer_of(name) > own
    ]
    assert not upward, f"{module_name(path)} (layer {own}) imports a higher layer: {upward}"


def test_the_layer_rule_catches_an_upward_import():
    assert layer_of("multirec.eval.evaluator") > layer_of("multirec.models.base")
    assert layer_of("multirec.train") > layer_of("multirec.pipeline.stages")
    assert layer_of("multirec.data.datamodule") < layer_of("multirec.features.cache")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_rooms_stay_small(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, (
        f"{path.name} is over {MAX_MODULE_LINES} lines"
    )
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"
