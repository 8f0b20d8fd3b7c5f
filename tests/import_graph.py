"""Draw the import graph of a package: its floors, its circles and the arrows that run back up.

    python tests/import_graph.py src/project

An arrow A -> B means module A imports module B, anywhere in its file (imports inside functions
count: they run too). ``from pkg import name`` is an arrow to ``pkg.name`` when that is a module,
else to ``pkg``. Floor 0 holds the modules that import nothing of the package; every other module
stands one floor above the highest module it imports (modules in one circle share a floor). The
same is drawn for the folders (``engine``, ``tools``, ...) and top-level modules (``errors``).

Every module also has a *rank* by what it is for: 0 for the floor the rooms stand on (``errors``,
``inference``, ``engine``), 1 for the rooms a user works in (nets, lightning modules, data modules),
2 for the tools on top (``tools``: the command line, export, search, seeds; ``__main__``). An arrow
from a lower rank to a higher one runs back up.
"""

import ast
import sys
from pathlib import Path

ROOMS = ("nets", "datamodules", "lightning_modules")  # what a user forks and edits
TOP = ("tools", "__main__")  # the command line and the tools that run many jobs, on top of the rooms


def module_names(root: Path) -> dict[str, Path]:
    """``{"project.tools.cli": path, ...}`` for every module of the package at ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts).removesuffix(".__init__")] = path
    return names


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that module ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..y import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # import a.b.c: the deepest module of ours
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    names = module_names(root)
    return {name: imports(name, path, set(names)) for name, path in names.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def floors(edges: dict[str, set[str]]) -> dict[str, int]:
    """Each module's floor: 0 if it imports nothing of ours, else one above the highest it imports."""
    group = {node: node for node in edges}
    for component in circles(edges):
        for member in component:
            group[member] = component[0]
    floor: dict[str, int] = {}

    def height(node: str, seen: frozenset[str]) -> int:
        if node in floor:
            return floor[node]
        below = [t for t in edges[node] if group[t] != group[node] and t not in seen]
        floor[node] = 1 + max((height(t, seen | {node}) for t in below), default=-1)
        return floor[node]

    for node in edges:
        height(node, frozenset())
    for component in circles(edges):  # one floor for a whole circle
        top = max(floor[m] for m in component)
        for member in component:
            floor[member] = top
    return floor


def rank(module: str, package: str) -> int:
    """0: the engine's foundation, 1: a user's room, 2: a tool on top of the rooms."""
    relative = module.removeprefix(package + ".")
    if relative.startswith(TOP):
        return 2
    return 1 if relative.split(".")[0] in ROOMS else 0


def upward_arrows(edges: dict[str, set[str]], package: str) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in edges.items() for b in targets if rank(a, package) < rank(b, package))


def folders(edges: dict[str, set[str]], package: str) -> dict[str, set[str]]:
    """The graph of the package's folders and top-level modules (``project.engine``, ``project.errors``):
    an arrow A -> B when a module in A imports a module in B."""

    def folder(module: str) -> str:
        return ".".join(module.split(".")[:2]) if module != package else module

    collapsed: dict[str, set[str]] = {folder(m): set() for m in edges}
    for a, targets in edges.items():
        collapsed[folder(a)] |= {folder(b) for b in targets if folder(b) != folder(a)}
    return collapsed


def main(root: Path) -> None:
    edges = graph(root)
    package = root.name
    by_folder = folders(edges, package)
    floor = floors(by_folder)
    print("folders:")
    for level in range(max(floor.values()) + 1):
        print(f"  floor {level}: " + ", ".join(sorted(m.removeprefix(package + ".") for m in by_folder if floor[m] == level)))
    print(f"  {max(floor.values()) + 1} floors, {len(circles(by_folder))} circle(s)")
    print("modules:")
    floor = floors(edges)
    for level in range(max(floor.values()) + 1):
        print(f"floor {level}: " + ", ".join(sorted(m.removeprefix(package + ".") for m in edges if floor[m] == level)))
    found = circles(edges)
    print(f"{max(floor.values()) + 1} floors, {sum(map(len, edges.values()))} arrows, {len(found)} circle(s)")
    for component in found:
        print("  circle: " + " <-> ".join(component))
    arrows = upward_arrows(edges, package)
    print(f"{len(arrows)} arrow(s) back up (foundation -> room or tool, room -> tool)")
    for a, b in arrows:
        print(f"  {a} -> {b}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "src/project").resolve())
