"""dvc.yaml's code dependencies are the code each stage really runs: every module of ours (stages.*, tunepipe.*) it imports,
directly or through another, at module level or inside a function, found here by Python's own ModuleFinder
(which reads the compiled bytecode, independently of the plan's reading of import statements); convert also
runs the reader its format names. And our modules import each other without a cycle."""
from __future__ import annotations

import ast
import re
import sys
from modulefinder import ModuleFinder
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PIPELINE = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
OURS = ("stages", "tunepipe")  # the repository's own packages


def imported(module_path: Path) -> set[str]:
    """Our source files running `module_path` loads (itself included), by ModuleFinder."""
    finder = ModuleFinder(path=[str(REPO)])  # only the project: third-party imports are left unresolved
    finder.run_script(str(module_path))
    files = {Path(m.__file__).resolve() for name, m in finder.modules.items()
             if name.split(".")[0] in OURS and m.__file__}
    return {p.relative_to(REPO).as_posix() for p in files} | {module_path.relative_to(REPO).as_posix()}


def reader_format(dataset: str) -> str:
    """The format of a dataset of the default profile: params.yaml's entry, or the experiment's own."""
    entry = (yaml.safe_load((REPO / "params.yaml").read_text())["datasets"] or {}).get(dataset)
    if entry is None:
        entry = yaml.safe_load((REPO / "experiments" / f"{dataset}.yaml").read_text())["dataset"]
    return entry["format"]


def code_deps(definition: dict) -> list[tuple[str, set[str], set[str]]]:
    """(stage@item, the stage's code deps, the code it runs) for every item of a dvc.yaml stage."""
    body = definition.get("do", definition)
    module = re.search(r"python -m (stages\.\w+)", body["cmd"]).group(1)
    # `python -m stages.x` runs the package's __init__.py first, which ModuleFinder's run_script does not
    runs = imported(REPO / (module.replace(".", "/") + ".py")) | {"stages/__init__.py"}
    items = definition.get("foreach") or {None: {}}
    found = []
    for key, item in items.items():
        deps = {dep.replace("${key}", str(key)) for dep in body.get("deps", [])}
        deps = {re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), dep) for dep in deps}
        code = {dep for dep in deps if dep.startswith(tuple(f"{p}/" for p in OURS)) and dep.endswith(".py")}
        expected = set(runs)
        if module == "stages.convert":  # the reader is loaded by name (importlib), from the dataset's format
            expected |= imported(REPO / "tunepipe/formats" / f"{reader_format(key)}.py")
        found.append((f"{body['cmd'].split()[2]}@{key}" if key else body["cmd"].split()[2], code, expected))
    return found


@pytest.mark.parametrize("stage", sorted(PIPELINE))
def test_each_stage_depends_on_exactly_the_code_it_imports(stage):
    for name, code, expected in code_deps(PIPELINE[stage]):
        assert code == expected, f"{name}: missing {sorted(expected - code)}, extra {sorted(code - expected)}"


def test_score_and_report_do_not_depend_on_the_model_code():
    """They read predictions and scores only; a change to how models are built must not re-run them."""
    for stage in ("score", "report"):
        for _, code, _ in code_deps(PIPELINE[stage]):
            model_code = {"tunepipe/loading.py", "tunepipe/kinds.py", "tunepipe/settings/schema.py",
                          "tunepipe/settings/resolve.py", "tunepipe/training.py"}
            assert not code & model_code, (stage, code & model_code)


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in OURS:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.split(".")[0] in OURS}
    return {n for n in names if (REPO / (n.replace(".", "/") + ".py")).exists()
            or (REPO / n.replace(".", "/") / "__init__.py").exists()}


def test_our_modules_import_each_other_without_a_cycle():
    modules = {p.relative_to(REPO).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__"): p
               for package in OURS for p in (REPO / package).rglob("*.py")}
    edges = {name: imports_of(path) - {name} for name, path in modules.items()}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for nxt in sorted(edges.get(name, ())):
            assert state.get(nxt) != "open", f"import cycle: {' -> '.join(trail + [name, nxt])}"
            if nxt not in state:
                visit(nxt, trail + [name])
        state[name] = "done"

    sys.setrecursionlimit(10_000)
    for name in sorted(modules):
        if name not in state:
            visit(name, [])
