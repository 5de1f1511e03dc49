"""Which of this repository's source files a module runs: its imports, read from the code, transitively.

The plan makes them each stage's code dependencies in dvc.yaml; the checkpoints fingerprint the train
stage's the same way. Imports anywhere in a file count (function-level ones included), and importing a.b.c
runs a/__init__.py and a/b/__init__.py too.
"""
from __future__ import annotations

import ast
from pathlib import Path

from tunepipe.layout import CODE_ROOT

PACKAGES = ("stages", "tunepipe")  # this repository's own top-level packages; every other import is a library


def module_file(module: str) -> Path | None:
    """The source file of one of our modules (a package's __init__.py), or None if there is none."""
    base = CODE_ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """Our modules a file imports anywhere in it (functions included), with their packages."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from tunepipe import memory` imports the module tunepipe.memory; `from tunepipe.x import f` tunepipe.x
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES and module_file(name):
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def code_deps(*modules: str) -> list[str]:
    """Every source file of ours the modules load, transitively, as repository paths (sorted)."""
    seen: set[str] = set()
    pending = list(modules)
    while pending:
        module = pending.pop()
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            seen_module = ".".join(parts[:i])
            if seen_module not in seen and module_file(seen_module):
                seen.add(seen_module)
                pending += sorted(imported_modules(module_file(seen_module)))
    return sorted(module_file(m).relative_to(CODE_ROOT).as_posix() for m in seen)
