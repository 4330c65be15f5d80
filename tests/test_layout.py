"""The package layout: every module imports, no import cycles, lower layers never import upper ones.

The import graph is read from the source (``ast``), function-level (lazy) imports included, so a
cycle hidden behind a lazy import is caught too.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import longvie

PACKAGE_DIR = Path(longvie.__file__).resolve().parent

# Which subpackages each subpackage may import (lowest layer first). Top-level modules
# (``longvie/__init__.py``, ``longvie/sample.py``) are entry points and may import anything.
ALLOWED = {
    "media": set(),
    "controls": {"media"},
    "models": set(),
    "weights": {"models"},
    "presets": {"models", "weights"},
    "acceleration": {"models", "weights", "presets"},
    "sampling": {"models", "weights", "media", "acceleration"},
    "examples": {"media", "controls"},
    "longvideo": {"media", "controls", "models", "weights", "presets", "acceleration", "sampling", "examples"},
    "train": {"media", "controls", "models", "weights", "presets", "acceleration", "sampling", "examples"},
    "camera": {"media", "controls", "models", "weights", "presets", "acceleration", "sampling", "examples",
               "longvideo"},
    "eval": {"media", "controls", "models", "weights", "presets", "acceleration", "sampling", "examples",
             "longvideo", "camera"},
    "app": {"media", "controls", "models", "weights", "presets", "acceleration", "sampling", "examples",
            "longvideo", "eval", "camera"},
    "benchmark": {"media", "controls", "models", "weights", "presets", "acceleration", "sampling", "examples",
                  "longvideo", "eval", "train", "camera"},
}
# issue 9: "at most about ten" concerns (+ __init__.py, sample.py, benchmark); issue 24 adds camera/
MAX_TOP_LEVEL_ENTRIES = 16


def _module_files() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, level: int, module: str, is_package: bool) -> str:
    if level == 0:
        return name
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the longvie modules it imports (any nesting level)."""
    modules = _module_files()
    graph = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", node.level, module, is_package)
                # ``from pkg import submodule`` is an edge to the submodule, not to pkg/__init__.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("longvie") and target != module:
                    edges.add(target)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in ALLOWED:
        return None
    return parts[1]


def test_every_module_imports():
    failures = []
    for info in pkgutil.walk_packages(longvie.__path__, "longvie."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except Exception as err:  # noqa: BLE001 - report every failing module at once
            failures.append(f"{info.name}: {type(err).__name__}: {err}")
    assert not failures, "\n".join(failures)


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_lower_layers_never_import_upper_ones():
    violations = []
    for module, targets in import_graph().items():
        source = _subpackage(module)
        top = module.split(".")[1] if "." in module else ""
        if source is None:
            assert top in ("", "sample", "__main__"), f"{module}: not in a known subpackage ({ALLOWED})"
            continue
        for target in targets:
            dest = _subpackage(target)
            if dest is None:
                if target != "longvie":  # `from .. import __version__` is fine
                    violations.append(f"{module} imports the entry point {target}")
            elif dest != source and dest not in ALLOWED[source]:
                violations.append(f"{module} ({source}) imports {target} ({dest})")
    assert not violations, "\n".join(violations)


def test_top_level_stays_small():
    entries = [p.name for p in PACKAGE_DIR.iterdir() if p.name != "__pycache__"]
    assert len(entries) <= MAX_TOP_LEVEL_ENTRIES, sorted(entries)


def test_public_names_importable():
    from longvie import LongVideoSampler, LongVieControlBranch, LongVieDenoiser, LongViePipeline  # noqa: F401
    from longvie.longvideo import LongVideoSettings, load_run_frames, validate_inputs  # noqa: F401


@pytest.mark.parametrize("graph, cyclic", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ({"a": {"a.x"}, "a.x": {"a"}}, True),
])
def test_cycle_finder(graph, cyclic):
    assert (find_cycle(graph) is not None) == cyclic
