"""Count the uses of private names of torch and Lightning in a source tree.

    python tests/private_api.py src/project

A use is: an attribute ``x._name`` read from anything but our own ``self``/``cls``/``super()``;
``self._name``, ``super()._name`` or a method ``def _name`` where ``_name`` belongs to a torch or
Lightning base class of ours; a string ``"_name"`` (``getattr(trainer, "_name")``); or an import
from a ``_private`` torch or Lightning module. Dunder names do not count.
"""

import ast
import importlib
import inspect
import sys
from pathlib import Path

LIBRARIES = ("torch", "lightning", "torchmetrics", "torchvision", "jsonargparse")


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def is_own(node: ast.expr) -> bool:
    """``self``, ``cls`` or ``super()``: whose private names are ours unless a library class defines them."""
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def library_names(module_name: str, class_name: str) -> set[str]:
    """Every attribute name defined by the library classes among ``class_name``'s bases."""
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return set()
    names: set[str] = set()
    for base in inspect.getmro(cls):
        if base.__module__.split(".")[0] in LIBRARIES:
            names |= set(vars(base))
    return names


def private_uses(path: Path, module_name: str) -> list[str]:
    tree = ast.parse(path.read_text())
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
            if any(is_private(part) for part in node.module.split(".")):
                uses.append(f"{path}:{node.lineno}: from {node.module} import")
        elif isinstance(node, ast.ClassDef):
            inherited = library_names(module_name, node.name)
            for inner in ast.walk(node):
                if isinstance(inner, ast.FunctionDef) and is_private(inner.name) and inner.name in inherited:
                    uses.append(f"{path}:{inner.lineno}: overrides {inner.name}")
                if isinstance(inner, ast.Attribute) and is_own(inner.value) and is_private(inner.attr) and inner.attr in inherited:
                    uses.append(f"{path}:{inner.lineno}: self.{inner.attr}")
        if isinstance(node, ast.Attribute) and is_private(node.attr) and not is_own(node.value):
            uses.append(f"{path}:{node.lineno}: .{node.attr}")
        for name in attribute_strings(node):
            uses.append(f"{path}:{node.lineno}: {name!r}")
    return sorted(set(uses))


def attribute_strings(node: ast.AST) -> list[str]:
    """Private names given as strings where an attribute name goes: ``getattr(x, "_name")`` and its
    kin, ``name == "_name"`` (as in a ``__setattr__`` that special-cases an attribute), or such a
    string kept in a variable."""
    if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
        function = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
        if function in ("getattr", "hasattr", "setattr", "delattr", "__setattr__") and len(node.args) >= 2:
            candidates = [node.args[1]]
        else:
            return []
    elif isinstance(node, ast.Compare):
        candidates = [node.left, *node.comparators]
    elif isinstance(node, ast.Assign):  # NAME = "_name", compared or passed on elsewhere
        candidates = [node.value]
    else:
        return []
    return [c.value for c in candidates if isinstance(c, ast.Constant) and isinstance(c.value, str)
            and c.value.isidentifier() and is_private(c.value)]


def scan(root: Path) -> dict[Path, list[str]]:
    """``{file: [uses]}`` for every Python file under ``root`` (a package folder on ``sys.path``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        if uses := private_uses(path, module):
            found[path] = uses
    return found


if __name__ == "__main__":
    results = scan(Path(sys.argv[1] if len(sys.argv) > 1 else "src/project"))
    for uses in results.values():
        print("\n".join(uses))
    print(f"{sum(len(u) for u in results.values())} private-API uses in {len(results)} file(s)")
