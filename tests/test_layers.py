"""
The package's imports run downwards only: each module sits on a layer, and a module imports only
modules on its own layer or below, with no import cycles, and the core never imports the
application packages under ``pyro_seq.contrib`` (only the recipe registry lists their recipes).
Every import counts, including those inside functions.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_seq"

#: Layers from the bottom; a module's layer is that of the longest matching prefix.
LAYERS = (
    ("foundations", ("pyro_seq", "pyro_seq.util", "pyro_seq.plotting", "pyro_seq.midi", "pyro_seq.contrib")),
    ("data", ("pyro_seq.data", "pyro_seq.contrib.protein.data", "pyro_seq.contrib.spatial.data")),
    ("nn, distributions", ("pyro_seq.nn", "pyro_seq.distributions")),
    ("models", ("pyro_seq.models", "pyro_seq.reference", "pyro_seq.contrib.protein.models", "pyro_seq.contrib.spatial.models")),
    ("guides", ("pyro_seq.guides", "pyro_seq.contrib.protein.guides", "pyro_seq.contrib.spatial.guides", "pyro_seq.contrib.protein", "pyro_seq.contrib.spatial")),
    ("losses", ("pyro_seq.losses",)),
    ("bounds, fivo", ("pyro_seq.bounds", "pyro_seq.fivo")),
    ("training", ("pyro_seq.training",)),
    ("diagnostics", ("pyro_seq.diagnostics", "pyro_seq.contrib.protein.metrics", "pyro_seq.contrib.protein.plots", "pyro_seq.contrib.spatial.metrics")),
    ("recipes", ("pyro_seq.recipes", "pyro_seq.contrib.protein.recipe", "pyro_seq.contrib.spatial.recipe")),
    ("cli", ("pyro_seq.cli", "pyro_seq.__main__")),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    assert best is not None, f"{module} is on no layer: add it to LAYERS"
    return best


def known_module(name: str, modules) -> str:
    """The longest prefix of a dotted name that is a module of the package (``from m import f``)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in modules:
            return ".".join(parts[:i])
    return name


def import_graph():
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f): f for f in files}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                found = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in found:
                if target.startswith("pyro_seq"):
                    target = known_module(target, modules)
                    if target != name:
                        targets.add(target)
        graph[name] = targets
    return graph


GRAPH = import_graph()


def test_every_module_has_a_layer():
    for module in GRAPH:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_run_downwards(module):
    upward = [
        f"{target} ({LAYERS[layer_of(target)][0]})"
        for target in sorted(GRAPH[module])
        if layer_of(target) > layer_of(module)
    ]
    assert not upward, f"{module} ({LAYERS[layer_of(module)][0]}) imports a higher layer: {upward}"


def test_no_import_cycles():
    # Tarjan's strongly connected components over the module graph
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            # a package importing its own submodules is not a cycle through them
            real = [m for m in component if not any(o != m and o.startswith(m + ".") for o in component)]
            if len(real) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_core_does_not_import_contrib():
    offenders = {
        m: sorted(t for t in targets if t.startswith("pyro_seq.contrib"))
        for m, targets in GRAPH.items()
        if not m.startswith("pyro_seq.contrib") and m != "pyro_seq.recipes.registry"
    }
    offenders = {m: t for m, t in offenders.items() if t}
    assert not offenders, f"core modules import the application packages: {offenders}"


def test_the_check_sees_an_upward_import():
    # the checker itself can fail: a models module importing the trainer is upward
    assert layer_of("pyro_seq.training.trainer") > layer_of("pyro_seq.models.srnn")
    assert layer_of("pyro_seq.contrib.protein.recipe") > layer_of("pyro_seq.contrib.protein.models")
    assert "pyro_seq.guides.zforcing" in GRAPH["pyro_seq.guides.srnn"]
