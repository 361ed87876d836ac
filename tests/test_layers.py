"""The import graph of hpcvmc/: imports go one way, down the layers, and there is no cycle.

The graph is read from the source with ``ast`` (every ``import`` and ``from ... import``,
also those inside functions), so it does not depend on what happens to be imported at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "hpcvmc"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("hpcvmc.version", "hpcvmc.errors", "hpcvmc.config", "hpcvmc.registry",
                    "hpcvmc.protocols", "hpcvmc.parallel", "hpcvmc.progress", "hpcvmc.stats",
                    "hpcvmc.outputs", "hpcvmc.signals", "hpcvmc.plotting", "hpcvmc.checkpoint",
                    "hpcvmc.runlock", "hpcvmc.export")),
    ("numerics", ("hpcvmc.logdet", "hpcvmc.chunking", "hpcvmc.laplacian", "hpcvmc.torus",
                  "hpcvmc.square_lattice", "hpcvmc.deduplication",
                  "hpcvmc.systems.moire_lattice", "hpcvmc.systems.ewald")),
    ("systems", ("hpcvmc.systems",)),
    ("reference", ("hpcvmc.reference",)),
    ("components", ("hpcvmc.models", "hpcvmc.sampling", "hpcvmc.continuum_sampling",
                    "hpcvmc.metropolis", "hpcvmc.optim")),
    ("assembly", ("hpcvmc.builtins", "hpcvmc.build", "hpcvmc.resources")),
    ("run", ("hpcvmc.fixed_sampling", "hpcvmc.observables", "hpcvmc.measure", "hpcvmc.driver",
             "hpcvmc.api", "hpcvmc.analysis")),
    ("entry", ("hpcvmc.cli", "hpcvmc.__main__", "hpcvmc")),
]
"""Layers from the bottom up; a module is in the layer of the longest prefix that names it
(``hpcvmc`` alone names the package's ``__init__`` only).

foundation: configuration, registry, protocols, MPI, files; no physics. numerics: geometry and
numerical pieces shared by several components (no component imports). systems: Hamiltonians.
reference: independent solutions of the systems (exact diagonalization, bands, Hartree-Fock),
which also give models their starting orbitals. components: models, samplers, optimizers.
assembly: the built-in registrations and the build of a run. run: driver, measurement,
analysis. entry: the command line, and the package itself, which re-exports the Python API.
"""

SYSTEM_BLIND = ("hpcvmc.models", "hpcvmc.sampling", "hpcvmc.continuum_sampling",
                "hpcvmc.metropolis", "hpcvmc.optim")
"""Components that see a system only through the System protocol: they import no module of
the systems layer (shared geometry lives in the numerics layer)."""


def module_name(path: Path) -> str:
    """Dotted module name of a file under hpcvmc/ (a package is named by its folder)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The hpcvmc modules a file imports; ``from pkg import sub`` counts as importing pkg.sub."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the hpcvmc modules it imports, for every module under hpcvmc/."""
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imported_modules(f, modules) for f in files}


def layer(module: str) -> int | None:
    """Index of the module's layer in LAYERS (None when no entry names it)."""
    best, index = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = "." in prefix and module.startswith(prefix + ".")
            if (module == prefix or inside) and len(prefix) > best:
                best, index = len(prefix), i
    return index


def in_group(module: str, prefixes: tuple[str, ...]) -> bool:
    """Whether the module is one of ``prefixes`` or inside one of them."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first = last), or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


GRAPH = import_graph()


def test_every_module_has_a_layer():
    assert [m for m in GRAPH if layer(m) is None] == [], "add the new module to LAYERS"


def test_imports_go_down_the_layers():
    upward = [f"{m} ({LAYERS[layer(m)][0]}) imports {d} ({LAYERS[layer(d)][0]})"
              for m, deps in sorted(GRAPH.items()) for d in sorted(deps)
              if layer(m) is not None and layer(d) is not None and layer(d) > layer(m)]
    assert upward == []


def test_components_import_no_system():
    systems = LAYERS[[name for name, _ in LAYERS].index("systems")][1]
    crossing = [f"{m} imports {d}" for m, deps in sorted(GRAPH.items()) for d in sorted(deps)
                if in_group(m, SYSTEM_BLIND) and in_group(d, systems)
                and LAYERS[layer(d)][0] == "systems"]
    assert crossing == []


def test_no_import_cycle():
    assert find_cycle(GRAPH) is None


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
])
def test_find_cycle(graph, cycle):
    assert find_cycle(graph) == cycle


def test_graph_reads_imports_inside_functions():
    assert "hpcvmc.build" in GRAPH["hpcvmc.resources"]
