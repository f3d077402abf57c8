"""Which source files a module runs: its transitive imports inside the package (read from the AST).

The workflow makes these files inputs of the rule that runs the module, so editing the code reruns exactly
the stages that use it. Only the standard library is imported here: the Snakefile loads this module.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = "hetsfl"


def module_file(name: str, src_root: Path) -> Path | None:
    """The file of module ``name`` (a.b.c) under ``src_root``, or None if it is not a package module."""
    base = src_root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _imports(path: Path) -> tuple[str, ...]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return tuple(n for n in names if n == PACKAGE or n.startswith(PACKAGE + "."))


def module_sources(name: str, src_root: str | Path) -> list[str]:
    """Sorted files of ``name`` and every package module it imports, directly or not (parents included)."""
    src_root = Path(src_root)
    seen: dict[str, Path] = {}
    todo = [name]
    while todo:
        mod = todo.pop()
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):  # a module's parent packages run too
            parent = ".".join(parts[:i])
            if parent in seen:
                continue
            path = module_file(parent, src_root)
            if path is None:
                continue
            seen[parent] = path
            todo.extend(_imports(path))
    return sorted(str(p) for p in seen.values())
