"""plan: experiments/*.yaml (+ params.yaml's datasets and models) -> dvc.yaml, the pipeline DVC runs.

    python -m stages.plan                           # write dvc.yaml for the default profile (the root)
    python -m stages.plan --profile profiles/real   # the same for a profile folder
    python -m stages.plan --check                   # fail, saying what to run, when dvc.yaml is out of date

dvc.yaml is written, never edited by hand, because DVC cannot list a folder of experiment files itself and
cannot look one file's values up from another's. Writing it here keeps three things exact:
- each stage's code dependencies are the `stages.*` modules it really imports, found by reading the import
  statements (transitively, function-level imports included), plus the format reader convert loads by name;
- each stage depends on its own slice of its experiment (data/config/<name>/<stage>.json, written by the
  config stage), so an edit re-runs only the stages it touches;
- downloads, conversions and base models are shared by the experiments that name the same entry.
The `plan` stage inside dvc.yaml runs this check whenever an experiment file or params.yaml changes, so a
new experiment file is never silently left out of `dvc repro`.
A profile is a folder laid out like the root (params.yaml, experiments/, its own dvc.yaml and dvc.lock);
its stages run from the repository root and keep their outputs inside the folder.
"""
from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from stages import common
from stages.common import CODE_ROOT, StageError, atomic_file, run_stage
from stages.schema import resolve
from stages.settings import EXPERIMENTS, experiment_names
from stages.sources import PARAMS, read_yaml

HEADER = ("# Written by `python -m stages.plan` from experiments/*.yaml and params.yaml: do not edit by hand\n"
          "# (edit those files, then run `make plan`, or `dvc repro`, whose `plan` stage says when this is stale).\n")
EXPERIMENT_STAGES = ("config", "tokenize", "train", "merge", "predict_before", "predict_after", "score")


def module_file(module: str) -> Path | None:
    """The source file of a `stages...` module (a package's __init__.py), or None if there is none."""
    base = CODE_ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """`stages...` modules a file imports anywhere in it (functions included), with their packages."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from stages import memory` imports the module stages.memory; `from stages.x import f` stages.x
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "stages" and module_file(name):
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def code_deps(*modules: str) -> list[str]:
    """Every stages.* source file the modules load, transitively, as repository paths (sorted)."""
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


def root_path(prefix: str, path: str) -> str:
    """A path written relative to the profile folder, as the repository root sees it."""
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(prefix or ".", path))


def command(stage: str, item: str | None, prefix: str, extra: str = "") -> str:
    parts = ["python -m", f"stages.{stage}", *([item] if item else []), *([extra] if extra else []),
             *(["--profile", prefix] if prefix else [])]
    return " ".join(parts)


def plan(prefix: str = "") -> dict[str, Any]:
    """dvc.yaml for the profile in folder `prefix` ('' for the root), read from the working folder."""
    def at(path: str) -> str:  # an output or input of this profile, as the repository root sees it
        return f"{prefix}/{path}" if prefix else path

    names = experiment_names()
    if not names:
        raise StageError(f"{at(str(EXPERIMENTS))}/: no experiment files (*.yaml)")
    setups = {name: resolve(name) for name in names}  # every file checked: a bad one fails the plan
    for name, setup in setups.items():
        gate = (setup.get("score") or {}).get("gate")
        if gate and gate.get("experiment") not in setups:
            raise StageError(f"experiments/{name}.yaml: score.gate.experiment {gate.get('experiment')!r} is not an "
                             f"experiment of this profile (it has {', '.join(setups)})")
    params = read_yaml(PARAMS)
    registry = {"datasets": params.get("datasets") or {}, "models": params.get("models") or {}}
    for name, setup in setups.items():
        for group, own in (("datasets", setup["own_dataset"]), ("models", setup["own_model"])):
            if own and name in registry[group]:
                raise StageError(f"experiments/{name}.yaml: its own {group[:-1]} would share the name '{name}' "
                                 f"with params.yaml {group}.{name}; rename one of them")

    params_file, experiment_file = at(str(PARAMS)), lambda name: at(f"{EXPERIMENTS}/{name}.yaml")
    models, datasets = {}, {}
    for name, setup in setups.items():
        spec_file, spec_key = (experiment_file(name), "model") if setup["own_model"] else (params_file, f"models.{setup['model']}")
        models[setup["model"]] = {"file": spec_file, "key": spec_key}
        if setup["own_dataset"]:
            spec_file, spec_key, spec = experiment_file(name), "dataset", setup["data"]
        else:
            spec_file, spec_key = params_file, f"datasets.{setup['dataset']}"
            spec = registry["datasets"][setup["dataset"]] or {}
        source = spec.get("source") or ("local" if spec.get("path") else None)
        watched = root_path(prefix, spec["path"]) if source == "local" and spec.get("path") else "stages/download.py"
        # the reader convert loads by name, and what it imports beyond convert's own code (the generic readers'
        # shared rows module); DVC takes no list from an item, so a reader without one names itself twice
        reader = f"stages.formats.{setup['format']}"
        extra = sorted(set(code_deps(reader)) - set(code_deps("stages.convert")))
        if len(extra) > 2:
            raise StageError(f"the {setup['format']} reader imports {extra}: the plan has room for two files")
        datasets[setup["dataset"]] = {"file": spec_file, "key": spec_key, "path": watched, "format": setup["format"],
                                      "reader": extra[0], "reader_helper": extra[-1]}

    stages: dict[str, Any] = {
        "plan": {"cmd": command("plan", None, prefix, "--check"),
                 "deps": [*code_deps("stages.plan"), at(str(EXPERIMENTS)), params_file]},
        "fetch_model": {"foreach": dict(sorted(models.items())), "do": {
            "cmd": command("fetch_model", "${key}", prefix), "deps": code_deps("stages.fetch_model"),
            "params": [{"${item.file}": ["${item.key}"]}], "outs": [at("models/base/${key}")]}},
        "download": {"foreach": {k: {x: v[x] for x in ("file", "key", "path")} for k, v in sorted(datasets.items())},
                     "do": {"cmd": command("download", "${key}", prefix),
                            "deps": [*code_deps("stages.download"), "${item.path}"],
                            "params": [{"${item.file}": ["${item.key}"]}], "outs": [at("data/raw/${key}")]}},
        "convert": {"foreach": {k: {x: v[x] for x in ("file", "key", "reader", "reader_helper")}
                                for k, v in sorted(datasets.items())},
                    "do": {"cmd": command("convert", "${key}", prefix),
                           "deps": [*code_deps("stages.convert"), "${item.reader}", "${item.reader_helper}",
                                    at("data/raw/${key}")],
                           "params": [{"${item.file}": ["${item.key}"]}],
                           "outs": [at("data/converted/${key}"), at("data/rejected/${key}.jsonl"),
                                    {at("reports/ledger/${key}.json"): {"cache": False}}]}},
    }
    config_of = lambda stage: at(f"data/config/${{key}}/{stage}.json")  # noqa: E731
    items = {name: {"dataset": s["dataset"], "model": s["model"], "kind": s["kind"], "method": s["method"],
                    "metric": s["metric"],
                    "accelerate": root_path(prefix, s["train"]["accelerate_config"]) if s["train"].get(
                        "accelerate_config") else at(f"data/config/{name}/train.json"),
                    # a cascade's gate: another experiment's predictions on the same rows
                    "gate": at(f"data/predictions/{s['score']['gate']['experiment']}/after.jsonl")
                    if (s.get("score") or {}).get("gate") else at(f"data/config/{name}/score.json")}
             for name, s in setups.items()}
    pick = lambda *keys, only=None: {n: {k: items[n][k] for k in keys} for n in items if only is None or n in only}  # noqa: E731
    data = lambda path: at(f"data/converted/${{item.dataset}}/{path}")  # noqa: E731
    base = at("models/base/${item.model}")
    stages["config"] = {"foreach": pick("kind", "method"), "do": {
        "cmd": command("config", "${key}", prefix),
        "deps": [*code_deps("stages.config"), "defaults/base.yaml",
                 "defaults/kind/${item.kind}.yaml", "defaults/method/${item.method}.yaml"],
        "params": [{at(f"{EXPERIMENTS}/${{key}}.yaml"): None}], "outs": [at("data/config/${key}")]}}
    stages["tokenize"] = {"foreach": pick("dataset", "model"), "do": {
        "cmd": command("tokenize", "${key}", prefix),
        "deps": [*code_deps("stages.tokenize"), config_of("tokenize"), at("data/converted/${item.dataset}"), base],
        "outs": [at("data/tokenized/${key}"), {at("reports/tokenize/${key}.json"): {"cache": False}}]}}
    stages["train"] = {"foreach": pick("dataset", "model", "accelerate"), "do": {
        "cmd": command("train", "${key}", prefix),
        "deps": [*code_deps("stages.train"), config_of("train"), at("data/tokenized/${key}/train"),
                 at("data/tokenized/${key}/validation"), data("labels.json"), base, "${item.accelerate}"],
        "outs": [at("models/trained/${key}"), {at("reports/train/${key}/summary.json"): {"cache": False}}],
        "metrics": [{at("reports/train/${key}/live/metrics.json"): {"cache": False}}],
        "plots": [{at("reports/train/${key}/live/plots/metrics"): {"cache": False, "x": "step"}}]}}
    merged = [name for name, s in setups.items() if "merge" in s]
    if merged:
        stages["merge"] = {"foreach": pick("model", only=merged), "do": {
            "cmd": command("merge", "${key}", prefix),
            "deps": [*code_deps("stages.merge"), config_of("merge"), base, at("models/trained/${key}")],
            "outs": [at("models/merged/${key}")]}}
    for which in ("before", "after"):
        stages[f"predict_{which}"] = {"foreach": pick("dataset", "model"), "do": {
            "cmd": command("predict", "${key}", prefix, which),
            "deps": [*code_deps("stages.predict"), config_of("predict"), at("data/tokenized/${key}/test"),
                     data("test.jsonl"), data("labels.json"), base]
            + ([at("models/trained/${key}")] if which == "after" else []),
            "outs": [at(f"data/predictions/${{key}}/{which}.jsonl"), at(f"data/predictions/${{key}}/{which}.settings.json")]}}
    stages["score"] = {"foreach": pick("dataset", "metric", "gate"), "do": {
        "cmd": command("score", "${key}", prefix),
        "deps": [*code_deps("stages.score"), config_of("score"), "metrics/${item.metric}", data("labels.json"),
                 data("test.jsonl"), "${item.gate}",
                 at("data/predictions/${key}/before.jsonl"), at("data/predictions/${key}/after.jsonl")],
        "metrics": [{at("reports/metrics/${key}.json"): {"cache": False}}]}}
    stages["report"] = {
        "cmd": command("report", None, prefix),
        "deps": [*code_deps("stages.report"), "metrics", at("reports/metrics"), at("reports/train"),
                 at("reports/tokenize"), at("data/predictions"), *(at(f"data/config/{n}/report.json") for n in names)],
        "params": [{params_file: ["report"]}],
        "outs": [{at(f"reports/{name}"): {"cache": False}} for name in ("README.md", "plots", "scores.csv")]}
    if prefix:
        for stage in stages.values():
            (stage["do"] if "do" in stage else stage)["wdir"] = os.path.relpath(".", prefix)
    return {"stages": stages, "plots": [
        {at("reports/scores.csv"): {"template": "bar_horizontal", "x": "after", "y": "experiment",
                                    "title": "Score after training (headline metric of each experiment)"}},
        at("reports/plots/before-after.png")]}


class Dumper(yaml.SafeDumper):
    """Lists of names on one line, nested settings as blocks: a dvc.yaml a person can read."""


def render(pipeline: dict[str, Any]) -> str:
    body = yaml.dump(pipeline, Dumper=Dumper, sort_keys=False, default_flow_style=None, width=120,
                     allow_unicode=True)
    return HEADER + body


def main(argv: list[str]) -> None:
    check = "--check" in argv
    unknown = [arg for arg in argv if arg != "--check"]
    if unknown:
        raise StageError(f"usage: python -m stages.plan [--check] [--profile FOLDER] (got {' '.join(unknown)})")
    prefix = common.PROFILE
    text = render(plan(prefix))
    target = Path("dvc.yaml")
    where = f"{prefix}/dvc.yaml" if prefix else "dvc.yaml"
    if check:
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            rerun = "make plan" if not prefix else f"python -m stages.plan --profile {prefix}"
            raise StageError(f"{where} is out of date with {prefix + '/' if prefix else ''}experiments/ and "
                             f"params.yaml (an experiment added, removed, or its dataset, model, kind, method "
                             f"or metric changed): run `{rerun}`, then dvc repro")
        print(f"[plan] {where} is up to date ({len(experiment_names())} experiments)")
        return
    if target.exists() and target.read_text(encoding="utf-8") == text:
        print(f"[plan] {where}: unchanged")
        return
    with atomic_file(target) as handle:
        handle.write(text)
    print(f"[plan] {where}: {len(experiment_names())} experiments", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main, timed=False)  # a check, not work: it leaves no timing behind
