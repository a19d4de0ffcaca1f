"""Layering rules of `localoai/`, checked on the source: no import cycle, no import that points up, no module over
~400 lines, and the packages above the engine reach it only through its declared interface.

The import graph is built with `ast` from every module, counting module-level, function-local and `TYPE_CHECKING`
imports alike (a function-local import hides a cycle from Python, not from the design) and resolving relative
imports. The sets below marked "until merge" list what other branches of issue #12 fix; each check also fails
when an entry is no longer true, so the sets only shrink.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "localoai"
MAX_LINES = 400

# Modules owned by other branches of issue #12 that their split brings under MAX_LINES; the lead empties this set
# after merging them. Nothing else may be over the limit.
EXPECTED_TO_SHRINK: set[str] = set()

# The local engine's internals: what only `localoai.engine` itself, the server that builds the local `Engine`
# (`server/`, `served.py`) and `localoai.testing` may import. Everything above the engine goes through
# `localoai.engine.interface` and the data it names (`params`: sampling parameters and per-step deltas; `stream`:
# the `RequestStream` a request's deltas arrive on; `text`). Adjust here when the interface moves.
ENGINE_INTERNALS: set[str] = {
    "localoai.engine.batch_sampling",
    "localoai.engine.cached_prefill",
    "localoai.engine.compiling",
    "localoai.engine.kv_buffer",
    "localoai.engine.backend",
    "localoai.engine.engine",
    "localoai.engine.jobs",
    "localoai.engine.prefix_cache",
    "localoai.engine.running",
    "localoai.engine.sampler",
}
# Packages that must not import ENGINE_INTERNALS.
ABOVE_THE_ENGINE: tuple[str, ...] = (
    "localoai.handlers",
    "localoai.episodes",
    "localoai.store",
    "localoai.widgets",
    "localoai.app",
)
# Imports of ENGINE_INTERNALS that the engine branch of issue #12 replaces by `localoai.engine.interface`
# (`QueueFull`, `PAUSE_MODES`); the lead empties this set after merging it.
ENGINE_IMPORTS_UNTIL_MERGE: set[str] = set()


# Dependencies point one way: routes -> handlers -> engine / store / parsers / episodes. Each package here must
# not import the packages named after it.
UPWARD: dict[str, tuple[str, ...]] = {
    "localoai.handlers": ("localoai.app", "localoai.server"),
    "localoai.protocol": ("localoai.handlers", "localoai.app", "localoai.server", "localoai.served"),
    "localoai.parsers": ("localoai.handlers", "localoai.app", "localoai.server", "localoai.served"),
    "localoai.constraints": ("localoai.handlers", "localoai.app", "localoai.server"),
    "localoai.episodes": ("localoai.handlers", "localoai.app", "localoai.server", "localoai.served", "localoai.widgets"),
    "localoai.widgets": ("localoai.handlers", "localoai.app", "localoai.server", "localoai.served"),
    "localoai.store": ("localoai.handlers", "localoai.app", "localoai.server", "localoai.served", "localoai.widgets",
                       "localoai.episodes", "localoai.engine", "localoai.protocol"),
    "localoai.engine": ("localoai.handlers", "localoai.app", "localoai.server", "localoai.served", "localoai.episodes",
                        "localoai.store", "localoai.widgets", "localoai.protocol"),
}
# `SQLiteStore.trajectory(id)` / `.trajectories()` stay for reading a saved store (the README shows them): they
# only call `localoai.episodes.trajectory`, which computes trajectories from the store's protocol.
COMPATIBILITY_IMPORTS: set[str] = {"localoai.store.sqlite imports localoai.episodes.trajectory"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The `localoai` modules `name` imports (anywhere in its body), resolved to modules that exist."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            # `from pkg import mod` imports the submodule when there is one, else a name from pkg itself.
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` where c is a name: the module is a.b
                target = target.rpartition(".")[0]
            if target.startswith("localoai") and target != name:
                yield target


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: set(imported(name, path, modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [shortest_cycle(graph, set(component)) for component in components]


def shortest_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One shortest cycle inside a strongly connected component, as `a -> b -> ... -> a`."""
    best: list[str] = []
    for start in sorted(component):
        parents: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            following = []
            for node in frontier:
                for nxt in sorted(graph[node] & component):
                    if nxt == start:
                        found = node
                        break
                    if nxt not in parents:
                        parents[nxt] = node
                        following.append(nxt)
                if found is not None:
                    break
            frontier = following
        if found is None:
            continue
        path = [found]
        while path[-1] != start:
            path.append(parents[path[-1]])
        path = path[::-1] + [start]
        if not best or len(path) < len(best):
            best = path
    return best


def test_the_graph_sees_function_local_and_relative_imports() -> None:
    graph = import_graph()
    assert "localoai.episodes.trajectory" in graph["localoai.server.lifecycle"]  # imported inside a function
    assert graph["localoai.store"] >= {"localoai.store.sqlite", "localoai.store.base"}  # relative imports


def test_cycles_are_found_when_there_is_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles in localoai/:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_no_module_over_the_line_limit() -> None:
    lines = {name: len(path.read_text().splitlines()) for name, path in all_modules().items()}
    over = {name: count for name, count in lines.items() if count > MAX_LINES}
    unexpected = {name: count for name, count in over.items() if name not in EXPECTED_TO_SHRINK}
    assert not unexpected, f"modules over {MAX_LINES} lines (split them by concern): {unexpected}"
    # A module that shrank leaves the set, so the set cannot hide a new one growing past the limit.
    assert not EXPECTED_TO_SHRINK - set(over), f"under {MAX_LINES} lines now: {EXPECTED_TO_SHRINK - set(over)}"


def test_nothing_above_the_engine_imports_its_internals() -> None:
    found = {
        f"{name} imports {target}"
        for name, targets in import_graph().items()
        if name.startswith(ABOVE_THE_ENGINE)
        for target in targets
        if target in ENGINE_INTERNALS
    }
    unexpected = sorted(found - ENGINE_IMPORTS_UNTIL_MERGE)
    assert not unexpected, "go through localoai.engine.interface instead:\n" + "\n".join(unexpected)
    assert not ENGINE_IMPORTS_UNTIL_MERGE - found, f"gone now: {ENGINE_IMPORTS_UNTIL_MERGE - found}"


def test_dependencies_point_one_way() -> None:
    found = {
        f"{name} imports {target}"
        for name, targets in import_graph().items()
        for package, above in UPWARD.items()
        if name == package or name.startswith(package + ".")
        for target in targets
        if target.startswith(above)
    }
    assert not found - COMPATIBILITY_IMPORTS, "imports that point up:\n" + "\n".join(sorted(found - COMPATIBILITY_IMPORTS))
    assert not COMPATIBILITY_IMPORTS - found, f"gone now: {COMPATIBILITY_IMPORTS - found}"
