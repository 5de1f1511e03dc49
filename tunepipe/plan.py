"""The pipeline DVC runs, written from experiments/*.yaml and params.yaml's datasets and models (dvc.yaml).

dvc.yaml is written, never edited by hand, because DVC cannot list a folder of experiment files itself and
cannot look one file's values up from another's. Writing it here keeps three things exact:
- each stage's code dependencies are the modules it really imports (tunepipe/imports.py), plus the format
  reader convert loads by name;
- each stage depends on its own slice of its experiment (data/config/<name>/<stage>.json, written by the
  config stage), so an edit re-runs only the stages it touches;
- downloads, conversions and base models are shared by the experiments that name the same entry.
A profile is a folder laid out like the root (params.yaml, experiments/, its own dvc.yaml and dvc.lock);
its stages run from the repository root and keep their outputs inside the folder.
"""
from __future__ import annotations

import os
from typing import Any

import yaml

from tunepipe.errors import StageError
from tunepipe.imports import code_deps
from tunepipe.layout import EXPERIMENTS, PARAMS
from tunepipe.objectives import check_init_from
from tunepipe.settings import experiment_names
from tunepipe.settings.resolve import resolve
from tunepipe.sources import read_yaml

HEADER = ("# Written by `python -m stages.plan` from experiments/*.yaml and params.yaml: do not edit by hand\n"
          "# (edit those files, then run `make plan`, or `dvc repro`, whose `plan` stage says when this is stale).\n")
READER_SLOTS = ("reader", "reader_helper", "reader_helper_2", "reader_helper_3")
EXPERIMENT_STAGES = ("config", "tokenize", "train", "merge", "predict_before", "predict_after", "score")


def root_path(prefix: str, path: str) -> str:
    """A path written relative to the profile folder, as the repository root sees it."""
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(prefix or ".", path))


def at(prefix: str, path: str) -> str:
    """An output or input of the profile in folder `prefix`, as the repository root sees it."""
    return f"{prefix}/{path}" if prefix else path


def command(stage: str, item: str | None, prefix: str, extra: str = "") -> str:
    parts = ["python -m", f"stages.{stage}", *([item] if item else []), *([extra] if extra else []),
             *(["--profile", prefix] if prefix else [])]
    return " ".join(parts)


def checked_setups(prefix: str) -> dict[str, dict[str, Any]]:
    """Every experiment file of the profile, resolved and checked: a bad one fails the plan."""
    names = experiment_names()
    if not names:
        raise StageError(f"{at(prefix, str(EXPERIMENTS))}/: no experiment files (*.yaml)")
    setups = {name: resolve(name) for name in names}
    for name, setup in setups.items():
        gate = (setup.get("score") or {}).get("gate")
        if gate and gate.get("experiment") not in setups:
            raise StageError(f"experiments/{name}.yaml: score.gate.experiment {gate.get('experiment')!r} is not an "
                             f"experiment of this profile (it has {', '.join(setups)})")
    for name, setup in setups.items():
        start = setup.get("init_from")
        if start and start not in setups:
            raise StageError(f"experiments/{name}.yaml: init_from {start!r} is not an experiment of this profile "
                             f"(it has {', '.join(setups)})")
        if start:
            check_init_from(setup, setups[start], f"experiments/{name}.yaml")
    registry = read_yaml(PARAMS)
    for name, setup in setups.items():
        for group, own in (("datasets", setup["own_dataset"]), ("models", setup["own_model"])):
            if own and name in (registry.get(group) or {}):
                raise StageError(f"experiments/{name}.yaml: its own {group[:-1]} would share the name '{name}' "
                                 f"with params.yaml {group}.{name}; rename one of them")
    return setups


def sources(setups: dict[str, dict], prefix: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """The base models and datasets the experiments name: where each one's spec is written, what download
    watches, and the reader convert loads."""
    params_file, registry = at(prefix, str(PARAMS)), read_yaml(PARAMS).get("datasets") or {}
    experiment_file = lambda name: at(prefix, f"{EXPERIMENTS}/{name}.yaml")  # noqa: E731
    models, datasets = {}, {}
    for name, setup in setups.items():
        spec_file, spec_key = (experiment_file(name), "model") if setup["own_model"] else (params_file, f"models.{setup['model']}")
        models[setup["model"]] = {"file": spec_file, "key": spec_key}
        if setup["own_dataset"]:
            spec_file, spec_key, spec = experiment_file(name), "dataset", setup["data"]
        else:
            spec_file, spec_key = params_file, f"datasets.{setup['dataset']}"
            spec = registry[setup["dataset"]] or {}
        source = spec.get("source") or ("local" if spec.get("path") else None)
        watched = root_path(prefix, spec["path"]) if source == "local" and spec.get("path") else "stages/download.py"
        # the reader convert loads by name, and what it imports beyond convert's own code (the generic readers'
        # shared rows module, the readers a preference reader builds on); DVC takes no list from an item, so
        # the slots a reader does not fill repeat its last file
        extra = sorted(set(code_deps(f"tunepipe.formats.{setup['format']}")) - set(code_deps("stages.convert")))
        if len(extra) > len(READER_SLOTS):
            raise StageError(f"the {setup['format']} reader imports {extra}: the plan has room for {len(READER_SLOTS)} files")
        datasets[setup["dataset"]] = {"file": spec_file, "key": spec_key, "path": watched, "format": setup["format"],
                                      **{slot: extra[min(n, len(extra) - 1)] for n, slot in enumerate(READER_SLOTS)}}
    return models, datasets


def source_stages(models: dict[str, dict], datasets: dict[str, dict], prefix: str) -> dict[str, Any]:
    """plan itself, fetch_model, download and convert: shared by every experiment that names the same entry."""
    return {
        "plan": {"cmd": command("plan", None, prefix, "--check"),
                 "deps": [*code_deps("stages.plan"), at(prefix, str(EXPERIMENTS)), at(prefix, str(PARAMS))]},
        "fetch_model": {"foreach": dict(sorted(models.items())), "do": {
            "cmd": command("fetch_model", "${key}", prefix), "deps": code_deps("stages.fetch_model"),
            "params": [{"${item.file}": ["${item.key}"]}], "outs": [at(prefix, "models/base/${key}")]}},
        "download": {"foreach": {k: {x: v[x] for x in ("file", "key", "path")} for k, v in sorted(datasets.items())},
                     "do": {"cmd": command("download", "${key}", prefix),
                            "deps": [*code_deps("stages.download"), "${item.path}"],
                            "params": [{"${item.file}": ["${item.key}"]}], "outs": [at(prefix, "data/raw/${key}")]}},
        "convert": {"foreach": {k: {x: v[x] for x in ("file", "key", *READER_SLOTS)}
                                for k, v in sorted(datasets.items())},
                    "do": {"cmd": command("convert", "${key}", prefix),
                           "deps": [*code_deps("stages.convert"), *(f"${{item.{slot}}}" for slot in READER_SLOTS),
                                    at(prefix, "data/raw/${key}")],
                           "params": [{"${item.file}": ["${item.key}"]}],
                           "outs": [at(prefix, "data/converted/${key}"), at(prefix, "data/rejected/${key}.jsonl"),
                                    {at(prefix, "reports/ledger/${key}.json"): {"cache": False}}]}},
    }


def experiment_items(setups: dict[str, dict], prefix: str) -> dict[str, dict[str, str]]:
    """What each experiment's stages look up by `${item.*}`."""
    return {name: {"dataset": s["dataset"], "model": s["model"], "kind": s["kind"], "method": s["method"],
                   "metric": s["metric"],
                   "accelerate": root_path(prefix, s["train"]["accelerate_config"]) if s["train"].get(
                       "accelerate_config") else at(prefix, f"data/config/{name}/train.json"),
                   # the trained model training starts from (and predict's "before" is), where another makes it
                   # (without one, a dep each stage has already stands in: DVC takes no empty item)
                   **{f"init_{stage}": at(prefix, f"models/trained/{s['init_from']}") if s.get("init_from")
                      else at(prefix, f"data/config/{name}/{stage}.json") for stage in ("train", "predict")},
                   # GRPO's rewards: the experiment's metric module scores each completion
                   "reward": f"metrics/{s['metric']}" if s.get("objective") == "grpo"
                   else at(prefix, f"data/config/{name}/train.json"),
                   # a cascade's gate: another experiment's predictions on the same rows
                   "gate": at(prefix, f"data/predictions/{s['score']['gate']['experiment']}/after.jsonl")
                   if (s.get("score") or {}).get("gate") else at(prefix, f"data/config/{name}/score.json")}
            for name, s in setups.items()}


def pick(items: dict[str, dict], *keys: str, only: list[str] | None = None) -> dict[str, dict]:
    return {n: {k: items[n][k] for k in keys} for n in items if only is None or n in only}


def training_stages(items: dict[str, dict], merged: list[str], prefix: str) -> dict[str, Any]:
    """config, tokenize, train and (for the experiments that ask) merge, one of each per experiment."""
    config_of = lambda stage: at(prefix, f"data/config/${{key}}/{stage}.json")  # noqa: E731
    base = at(prefix, "models/base/${item.model}")
    stages: dict[str, Any] = {"config": {"foreach": pick(items, "kind", "method"), "do": {
        "cmd": command("config", "${key}", prefix),
        "deps": [*code_deps("stages.config"), "defaults/base.yaml",
                 "defaults/kind/${item.kind}.yaml", "defaults/method/${item.method}.yaml"],
        "params": [{at(prefix, f"{EXPERIMENTS}/${{key}}.yaml"): None}], "outs": [at(prefix, "data/config/${key}")]}}}
    stages["tokenize"] = {"foreach": pick(items, "dataset", "model"), "do": {
        "cmd": command("tokenize", "${key}", prefix),
        "deps": [*code_deps("stages.tokenize"), config_of("tokenize"), at(prefix, "data/converted/${item.dataset}"), base],
        "outs": [at(prefix, "data/tokenized/${key}"), {at(prefix, "reports/tokenize/${key}.json"): {"cache": False}}]}}
    stages["train"] = {"foreach": pick(items, "dataset", "model", "accelerate", "init_train", "reward"), "do": {
        "cmd": command("train", "${key}", prefix),
        "deps": [*code_deps("stages.train"), config_of("train"), at(prefix, "data/tokenized/${key}/train"),
                 at(prefix, "data/tokenized/${key}/validation"), at(prefix, "data/converted/${item.dataset}/labels.json"),
                 base, "${item.accelerate}", "${item.init_train}", "${item.reward}"],
        "outs": [at(prefix, "models/trained/${key}"), {at(prefix, "reports/train/${key}/summary.json"): {"cache": False}}],
        "metrics": [{at(prefix, "reports/train/${key}/live/metrics.json"): {"cache": False}}],
        "plots": [{at(prefix, "reports/train/${key}/live/plots/metrics"): {"cache": False, "x": "step"}}]}}
    if merged:
        stages["merge"] = {"foreach": pick(items, "model", only=merged), "do": {
            "cmd": command("merge", "${key}", prefix),
            "deps": [*code_deps("stages.merge"), config_of("merge"), base, at(prefix, "models/trained/${key}")],
            "outs": [at(prefix, "models/merged/${key}")]}}
    return stages


def result_stages(items: dict[str, dict], names: list[str], prefix: str) -> dict[str, Any]:
    """predict before and after, score (one of each per experiment) and the report over all of them."""
    config_of = lambda stage: at(prefix, f"data/config/${{key}}/{stage}.json")  # noqa: E731
    data = lambda path: at(prefix, f"data/converted/${{item.dataset}}/{path}")  # noqa: E731
    stages: dict[str, Any] = {}
    for which in ("before", "after"):
        stages[f"predict_{which}"] = {"foreach": pick(items, "dataset", "model", "init_predict"), "do": {
            "cmd": command("predict", "${key}", prefix, which),
            "deps": [*code_deps("stages.predict"), config_of("predict"), at(prefix, "data/tokenized/${key}/test"),
                     data("test.jsonl"), data("labels.json"), at(prefix, "models/base/${item.model}")]
            + ([at(prefix, "models/trained/${key}")] if which == "after" else ["${item.init_predict}"]),
            "outs": [at(prefix, f"data/predictions/${{key}}/{which}.jsonl"),
                     at(prefix, f"data/predictions/${{key}}/{which}.settings.json")]}}
    stages["score"] = {"foreach": pick(items, "dataset", "metric", "gate"), "do": {
        "cmd": command("score", "${key}", prefix),
        "deps": [*code_deps("stages.score"), config_of("score"), "metrics/${item.metric}", data("labels.json"),
                 data("test.jsonl"), "${item.gate}",
                 at(prefix, "data/predictions/${key}/before.jsonl"), at(prefix, "data/predictions/${key}/after.jsonl")],
        "metrics": [{at(prefix, "reports/metrics/${key}.json"): {"cache": False}}]}}
    stages["report"] = {
        "cmd": command("report", None, prefix),
        "deps": [*code_deps("stages.report"), "metrics", at(prefix, "reports/metrics"), at(prefix, "reports/train"),
                 at(prefix, "reports/tokenize"), at(prefix, "data/predictions"),
                 *(at(prefix, f"data/config/{n}/report.json") for n in names)],
        "params": [{at(prefix, str(PARAMS)): ["report"]}],
        "outs": [{at(prefix, f"reports/{name}"): {"cache": False}} for name in ("README.md", "plots", "scores.csv")]}
    return stages


def plan(prefix: str = "") -> dict[str, Any]:
    """dvc.yaml for the profile in folder `prefix` ('' for the root), read from the working folder."""
    setups = checked_setups(prefix)
    models, datasets = sources(setups, prefix)
    items = experiment_items(setups, prefix)
    merged = [name for name, s in setups.items() if "merge" in s]
    stages = {**source_stages(models, datasets, prefix), **training_stages(items, merged, prefix),
              **result_stages(items, list(setups), prefix)}
    if prefix:
        for stage in stages.values():
            (stage["do"] if "do" in stage else stage)["wdir"] = os.path.relpath(".", prefix)
    return {"stages": stages, "plots": [
        {at(prefix, "reports/scores.csv"): {"template": "bar_horizontal", "x": "after", "y": "experiment",
                                            "title": "Score after training (headline metric of each experiment)"}},
        at(prefix, "reports/plots/before-after.png")]}


class Dumper(yaml.SafeDumper):
    """Lists of names on one line, nested settings as blocks: a dvc.yaml a person can read."""


def render(pipeline: dict[str, Any]) -> str:
    body = yaml.dump(pipeline, Dumper=Dumper, sort_keys=False, default_flow_style=None, width=120,
                     allow_unicode=True)
    return HEADER + body
