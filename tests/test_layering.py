"""The tree is the architecture: its layering rules, read from the imports themselves.

Every import counts, at module level, inside a function or under ``TYPE_CHECKING``:
a typing-only import still ties one layer to another (and can hide a cycle).
The rules are the ones docs/ARCHITECTURE.md states:

    model     tensor math: imports nothing from plasticd but model
    learn     the Engine and what it applies: model, config, errors (never service, bench, cli)
    samples   untrusted input: samples, errors
    data      built-in data: data, errors
    errors    a leaf
    service   never the benchmarks or the command line
    evolution the population: evolution, learn, model, config, errors
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "plasticd"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def imports_of(module: str) -> frozenset[str]:
    """The plasticd modules ``module`` imports (``from a import b`` counts ``a``, and ``a.b`` when b is a module)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return frozenset(name for name in found if name in MODULES and name != module)


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _modules_under(prefix: str) -> list[str]:
    return [m for m in MODULES if _within(m, (prefix,))]


def test_the_import_reader_sees_imports() -> None:
    """The rules below are only as good as the reader: it must see what is plainly there."""
    assert "plasticd.model.plastic_net" in imports_of("plasticd.learn.engine")
    assert "plasticd.learn.engine" in imports_of("plasticd.service.worker")
    assert "plasticd.model.growth" in imports_of("plasticd.learn.growth_policy")  # from plasticd.model import growth
    assert len(_modules_under("plasticd.model")) > 5 and len(_modules_under("plasticd.learn")) > 5


@pytest.mark.parametrize("layer", ["plasticd.model", "plasticd.learn"])
def test_model_and_learn_never_import_the_service_the_benchmarks_or_the_cli(layer: str) -> None:
    forbidden = ("plasticd.service", "plasticd.bench", "plasticd.cli")
    offences = {m: sorted(i for i in imports_of(m) if _within(i, forbidden)) for m in _modules_under(layer)}
    assert not {m: i for m, i in offences.items() if i}, "the learning core must not depend on the service around it"


ALLOWED = {
    "plasticd.model": ("plasticd.model",),
    "plasticd.learn": ("plasticd.learn", "plasticd.model", "plasticd.config", "plasticd.errors"),
    "plasticd.samples": ("plasticd.samples", "plasticd.errors"),
    "plasticd.data": ("plasticd.data", "plasticd.errors"),
    "plasticd.errors": (),
    "plasticd.evolution": ("plasticd.evolution", "plasticd.learn", "plasticd.model", "plasticd.config", "plasticd.errors"),
}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_lower_layer_imports_only_what_it_may(layer: str) -> None:
    offences = {m: sorted(i for i in imports_of(m) if not _within(i, ALLOWED[layer])) for m in _modules_under(layer)}
    assert not {m: i for m, i in offences.items() if i}, f"{layer} may import only {ALLOWED[layer]}"


def test_inside_learn_only_the_engine_imports_the_engine() -> None:
    """Growth policy, consolidation and state parsing return what the Engine applies; they never see it."""
    importers = [m for m in _modules_under("plasticd.learn") if "plasticd.learn.engine" in imports_of(m)]
    assert importers == [], f"{importers} import the engine: that is the cycle the layout removed"


def test_the_service_never_imports_the_benchmarks_or_the_cli() -> None:
    offences = {
        m: sorted(i for i in imports_of(m) if _within(i, ("plasticd.bench", "plasticd.cli")))
        for m in _modules_under("plasticd.service")
    }
    assert not {m: i for m, i in offences.items() if i}


def test_no_import_cycle() -> None:
    """Depth-first search over every import edge, typing-only and function-local ones included."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(imports_of(module)):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, path)
        path.pop()
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [])
    assert cycles == []
