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
    "plasticd.engine_settings": (),
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


# ------------------------------------------------------------------ the Engine is the only writer of learning state

ENGINE_MAKERS = ("Engine", "from_settings", "engine_from")  # calls whose result is an Engine


def _chain(node: ast.AST) -> list[str]:
    """``a.b[c].d`` as ["a", "b", "d"] (subscripts are looked through); [] when the root is not a name."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Name):
            return [node.id, *reversed(parts)]
        else:
            return []


def _is_engine(expr: ast.AST, aliases: set[str]) -> bool:
    """An expression that is an Engine: ``engine``, ``x.engine``, an alias of one, or a fresh one."""
    if isinstance(expr, ast.Call):
        func = expr.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        return name in ENGINE_MAKERS
    chain = _chain(expr)
    return bool(chain) and (chain[-1] == "engine" or (len(chain) == 1 and chain[0] in aliases))


def _writes_into_engine(target: ast.AST, aliases: set[str]) -> bool:
    """``target`` is an attribute (or item) of an Engine, or of one of its attributes, at any depth."""
    chain = _chain(target)
    if len(chain) < 2 or not isinstance(target, (ast.Attribute, ast.Subscript)):
        return False
    return any(part == "engine" for part in chain[:-1]) or chain[0] in aliases


def engine_writes(source: str, filename: str = "<src>") -> list[str]:
    """Every assignment, augmented assignment or in-place tensor method (``x.add_(...)``) into an Engine's state."""
    found: list[str] = []
    for scope in ast.walk(ast.parse(source, filename)):
        if not isinstance(scope, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        aliases: set[str] = {"engine"}
        body = list(ast.walk(scope)) if isinstance(scope, ast.Module) else [n for s in scope.body for n in ast.walk(s)]
        for node in body:  # aliases first: ``e = w.engine``, ``engine = Engine(...)``
            if isinstance(node, ast.Assign) and _is_engine(node.value, aliases):
                aliases.update(t.id for t in node.targets if isinstance(t, ast.Name))
        for node in body:
            targets: list[ast.AST] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.endswith("_"):
                if (
                    not node.func.attr.startswith("_")
                    and _writes_into_engine(node.func.value, aliases)
                    or (_is_engine(node.func.value, aliases) and not node.func.attr.startswith("_"))
                ):
                    found.append(f"{filename}:{node.lineno}: .{node.func.attr}(...) on the engine's state")
                continue
            while any(isinstance(t, (ast.Tuple, ast.List)) for t in targets):
                targets = [e for t in targets for e in (t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t])]
            for t in targets:
                for leaf in [t]:
                    if _writes_into_engine(leaf, aliases):
                        found.append(f"{filename}:{node.lineno}: assigns {'.'.join(_chain(leaf))}")
    return sorted(set(found))


def test_the_engine_write_reader_sees_writes_and_lets_reads_and_doors_pass() -> None:
    offender = (
        "def f(w, x):\n"
        "    e = w.engine\n"
        "    e.steps += 1\n"
        "    w.engine.metrics.seen = 3\n"
        "    e.theta['w'][0] = x\n"
        "    e.clock.age, n = 0, 1\n"
        "    w.engine.optimizer.state[p]['step'].add_(1)\n"
        "    engine = Engine.from_settings(s)\n"
        "    engine.drift.alarms = 2\n"
    )
    assert len(engine_writes(offender)) == 6
    clean = (
        "def f(w):\n"
        "    e = w.engine\n"
        "    n = e.metrics.trained + e.counts().inputs\n"
        "    e.fold([], 0, e.counts())\n"
        "    w.heartbeat.facts = {'n': n}\n"
        "    self.engine = e\n"
    )
    assert engine_writes(clean) == []


def test_no_module_outside_learn_writes_into_an_engine() -> None:
    """The Engine changes only through its doors: no module outside learn/ assigns to, augments or mutates in place
    an Engine attribute or an attribute of one (``learn/replication.py`` gives replicas their doors)."""
    offences = [
        hit
        for m in MODULES
        if not _within(m, ("plasticd.learn",))
        for hit in engine_writes(MODULES[m].read_text(), str(MODULES[m].relative_to(PACKAGE.parent)))
    ]
    assert offences == []


def test_distributed_never_imports_the_model_layer() -> None:
    """Replicas move flat tensors and plain data that learn/ hands them; the tensor math stays behind the Engine."""
    offences = {
        m: sorted(i for i in imports_of(m) if _within(i, ("plasticd.model",))) for m in _modules_under("plasticd.distributed")
    }
    assert not {m: i for m, i in offences.items() if i}


def test_the_operator_tools_never_import_the_benchmarks() -> None:
    offences = {m: sorted(i for i in imports_of(m) if _within(i, ("plasticd.bench",))) for m in _modules_under("plasticd.tools")}
    assert not {m: i for m, i in offences.items() if i}


def _calls(module: str, attribute: str) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(ast.parse(MODULES[module].read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attribute
    ]


def test_torch_threads_are_set_in_one_place() -> None:
    """runtime.threads has one home (plasticd/threads.py); every command and benchmark goes through it."""
    callers = sorted(m for m in MODULES if _calls(m, "set_num_threads"))
    assert callers == ["plasticd.threads"]


def test_the_sample_limit_defaults_have_one_home() -> None:
    """config.LimitSettings takes its defaults from samples/limits.py: the two can never disagree."""
    from plasticd.config import LimitSettings
    from plasticd.samples.limits import DEFAULT_LIMITS

    for name, field in LimitSettings.model_fields.items():
        assert field.default == getattr(DEFAULT_LIMITS, name), name
    assert "plasticd.samples.limits" in imports_of("plasticd.config")
