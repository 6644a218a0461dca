"""The import structure, read from the source (every import, lazy and type-only ones included): the lower
packages never import the higher ones, and no module imports itself back through others.

    model, tokenizer, engine  import nothing from  api, eval, train
    eval, train               import nothing from  api
"""

from __future__ import annotations

import ast
from pathlib import Path

import nanoseek

PACKAGE_ROOT = Path(nanoseek.__file__).parent
LAYERS = [
    (("model", "tokenizer", "engine"), ("api", "eval", "train")),
    (("eval", "train"), ("api",)),
]


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        parts = ["nanoseek", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the nanoseek modules it imports (`from package import submodule` counts as the submodule)."""
    modules = module_names()

    def owner(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {owner(alias.name) for alias in node.names if alias.name.startswith("nanoseek.")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("nanoseek"):
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    targets.add(submodule if submodule in modules else owner(node.module))
        graph[name] = targets - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def package_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_lower_packages_import_nothing_from_higher_ones():
    graph = import_graph()
    violations = [
        f"{module} imports {target}"
        for lower, higher in LAYERS
        for module, targets in graph.items()
        if package_of(module) in lower
        for target in sorted(targets)
        if package_of(target) in higher
    ]
    assert violations == []


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_the_walk_sees_lazy_imports_and_finds_a_circle():
    graph = import_graph()
    assert "nanoseek.engine.engine" in graph["nanoseek.engine.info"]
    assert "nanoseek.train.stages" in graph["nanoseek.train.cli"]  # imported inside main()
    # config.py importing rl.py, which imports it back, would close a circle
    looped = cycles({**graph, "nanoseek.train.config": {"nanoseek.train.rl"}})
    assert any({"nanoseek.train.config", "nanoseek.train.rl"} <= set(circle) for circle in looped)
