"""The README names tests as evidence (the reliability table, the sections on real data and your own data):
every `tests/...py::test_name` it names exists, so the evidence cannot silently go stale."""
from __future__ import annotations

import ast
import re

from tests.conftest import REPO


def test_every_test_the_readme_names_exists():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(?:tests/)?(test_\w+\.py)::(test_\w+)", readme))
    assert len(named) > 25
    missing = []
    for file, test in sorted(named):
        path = next(REPO.joinpath("tests").rglob(file), None)
        functions = {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)} \
            if path else set()
        if test not in functions:
            missing.append(f"{file}::{test}")
    assert not missing, missing
