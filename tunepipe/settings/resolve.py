"""An experiment with its defaults filled in and checked: experiments/<name>.yaml -> every section a stage reads.

An experiment is one file. Its gaps are filled from three defaults files, later ones winning, key by key:

    defaults/base.yaml  <  defaults/kind/<kind>.yaml  <  defaults/method/<method>.yaml  <  experiments/<name>.yaml

Each file is checked on its own first, so an unknown key or a wrong type is reported in the file and on the
line where it was written ("experiments/x.yaml:7: train.eval_step: unknown key (known: ...)"); then the
merged whole is checked for what no file set (a LoRA needs its rank) and for pairs that do not fit (a token
head cannot be prompt-tuned). Nothing heavy is imported: a bad file fails in well under a second.
The config stage writes each stage its slice (STAGE_KEYS); tunepipe.settings reads the slices back.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tunepipe.errors import StageError
from tunepipe.formats import READERS, known_options
from tunepipe.kinds import KINDS, MERGEABLE, check_bitsandbytes
from tunepipe.layout import DEFAULTS, EXPERIMENTS
from tunepipe.objectives import OBJECTIVES, check_objective
from tunepipe.settings.schema import Experiment
from tunepipe.sources import DataSpec, ModelSpec, check_file, infer_source, read_yaml, registry_entry, shown

# written only where an experiment sets them, so an sft experiment's settings files stay as they were
ONLY_WHEN_SET = ("objective", "init_from")
# what the experiment is; its name is not in the files (the stage knows it), so two experiments with the same
# settings have the same settings files, and the same cache entries
IDENTITY = ("dataset", "model", "kind", "kind_rows", "generates")
STAGE_KEYS = {  # what each stage reads: a change anywhere else leaves it up to date
    "tokenize": (*IDENTITY, "objective", "tokenize"),
    "train": (*IDENTITY, "objective", "init_from", "method", "seed", "qlora", "train"),
    "predict": (*IDENTITY, "init_from", "method", "metric", "seed", "qlora", "predict"),
    "score": (*IDENTITY, "metric", "score"),
    "merge": (*IDENTITY, "method", "qlora", "merge", "train"),
    "report": (*IDENTITY, "task", "description", "method", "metric", "targets"),
}


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def defaults_files(kind: str, method: str) -> list[Path]:
    return [DEFAULTS / "base.yaml", DEFAULTS / "kind" / f"{kind}.yaml", DEFAULTS / "method" / f"{method}.yaml"]


def data_spec(setup: dict[str, Any], name: str, root: Path) -> tuple[str, dict[str, Any]]:
    """(dataset name, its download + convert spec): a params.yaml entry, or the experiment's own."""
    dataset = setup["dataset"]
    spec = registry_entry("datasets", dataset, DataSpec, root) if isinstance(dataset, str) else dict(dataset)
    spec.setdefault("source", infer_source(spec, (("path", "local"), ("url", "url"), ("repo_id", "hub"))))
    return (dataset if isinstance(dataset, str) else name), spec


def model_spec(setup: dict[str, Any], name: str, root: Path) -> tuple[str, dict[str, Any]]:
    model = setup["model"]
    spec = registry_entry("models", model, ModelSpec, root) if isinstance(model, str) else dict(model)
    spec.setdefault("source", infer_source(spec, (("package", "package"), ("path", "local"), ("repo_id", "hub"))))
    return (model if isinstance(model, str) else name), spec

REQUIRED = {"tokenize": ("max_length",), "train": ("epochs", "batch_size", "learning_rate", "threads"),
            "predict": ("batch_size",), "merge": ("tolerance",)}


def resolve(name: str, root: Path = Path(".")) -> dict[str, Any]:
    """experiments/<name>.yaml with its defaults, checked: every section a stage reads, filled in."""
    path = root / EXPERIMENTS / f"{name}.yaml"
    where = shown(path)
    own = read_yaml(path)
    check_file(own, path, Experiment)
    for key in ("dataset", "model", "kind", "method", "metric"):
        if own.get(key) is None:
            raise StageError(f"{where}: missing required key '{key}'")
    if isinstance(own["dataset"], dict) and not own["dataset"].get("format"):
        raise StageError(f"{where}: dataset.format: missing (one of {', '.join(sorted(READERS))})")
    setup = check_file(with_defaults(own), path, Experiment).model_dump(exclude_unset=True)
    check_pairs(setup, own, where)
    if setup.get("objective") == "sft":
        del setup["objective"]  # the default, written or not: the same settings files
    check_objective(setup, where)
    check_required(setup, where)
    check_method_sections(setup["train"], setup["method"], where)
    if setup["train"].get("keep_best") and not setup["train"].get("eval_steps"):
        raise StageError(f"{where}: train.keep_best: needs eval_steps set (it keeps the best evaluation)")
    dataset, data = data_spec(setup, name, root)
    model, base = model_spec(setup, name, root)
    check_dataset_options(dataset, data, where)
    kind = setup["kind"]
    setup.update(name=name, dataset=dataset, model=model, own_dataset=not isinstance(own["dataset"], str),
                 own_model=not isinstance(own["model"], str), format=data["format"], source=data.get("source"),
                 model_source=base.get("source"), data=data, base=base,
                 kind_rows=list(OBJECTIVES[setup["objective"]].rows if setup.get("objective") else KINDS[kind].rows),
                 generates=KINDS[kind].generates)
    return setup


def with_defaults(own: dict[str, Any]) -> dict[str, Any]:
    """The experiment file over its three defaults files, each checked on its own first."""
    merged: dict[str, Any] = {}
    for file in defaults_files(own["kind"], own["method"]):
        layer = read_yaml(file)
        check_file(layer, file, Experiment)
        merged = deep_merge(merged, layer)
    # a defaults file's `merge` holds settings; only the experiment's own `merge` asks for a merge stage
    merge_settings = merged.pop("merge", None) or {}
    wants_merge = own.get("merge")
    merged = deep_merge(merged, {k: v for k, v in own.items() if k != "merge"})
    if wants_merge:
        merged["merge"] = deep_merge(merge_settings, wants_merge if isinstance(wants_merge, dict) else {})
    return merged


def check_pairs(setup: dict[str, Any], own: dict[str, Any], where: Path) -> None:
    """Settings that do not fit together: a method the kind cannot take, 4-bit settings without QLoRA."""
    kind, method = setup["kind"], setup["method"]
    if method not in KINDS[kind].methods:
        raise StageError(f"{where}: method: '{method}' does not fit kind '{kind}' "
                         f"(a {kind} takes {', '.join(KINDS[kind].methods)})")
    if method == "qlora":
        check_bitsandbytes(f"{where}: method")
    elif own.get("qlora"):
        raise StageError(f"{where}: qlora: 4-bit settings need method qlora, not '{method}'")
    if "merge" in setup and method not in MERGEABLE:
        raise StageError(f"{where}: merge: method '{method}' has no low-rank update to merge "
                         f"(merge applies to {', '.join(MERGEABLE)})")


def check_required(setup: dict[str, Any], where: Path) -> None:
    """What no file set: each section's REQUIRED keys (and max_new_tokens for a model that generates)."""
    kind = setup["kind"]
    for section, keys in REQUIRED.items():
        if section == "merge" and "merge" not in setup:
            continue
        if section == "predict" and KINDS[kind].generates:
            keys = (*keys, "max_new_tokens")
        elif section == "predict" and (setup.get("predict") or {}).get("answer_anyway"):
            raise StageError(f"{where}: predict: answer_anyway applies to a model that generates, not a {kind}")
        values = setup.get(section) or {}
        missing = [key for key in keys if values.get(key) is None]
        if missing:
            raise StageError(f"{where}: {section}: missing required key{'s' * (len(missing) > 1)} {', '.join(missing)}")


def check_method_sections(train: dict[str, Any], method: str, where: Path) -> None:
    """The method's own train section complete; another method's (from the defaults) dropped."""
    if method in MERGEABLE:
        missing = [k for k in ("r", "alpha", "dropout") if (train.get("lora") or {}).get(k) is None]
        if missing:
            raise StageError(f"{where}: train.lora: missing required keys {', '.join(missing)}")
    else:
        train.pop("lora", None)
    if method == "prompt_tuning":
        if (train.get("prompt_tuning") or {}).get("virtual_tokens") is None:
            raise StageError(f"{where}: train.prompt_tuning: missing required key virtual_tokens")
    else:
        train.pop("prompt_tuning", None)


def check_dataset_options(dataset: str, data: dict[str, Any], where: Path) -> None:
    if not data.get("format"):
        raise StageError(f"{where}: dataset '{dataset}' has no format")
    known = known_options(data["format"])
    unknown = sorted(set(data.get("options") or {}) - set(known)) if known is not None else []
    if unknown:
        raise StageError(f"{where}: dataset options: unknown {unknown} for format {data['format']} "
                         f"(known: {', '.join(sorted(known))})")


def stage_settings(setup: dict[str, Any]) -> dict[str, dict[str, Any]]:
    files = {stage: {key: setup.get(key) for key in keys if key not in ONLY_WHEN_SET or setup.get(key)}
             for stage, keys in STAGE_KEYS.items()}
    if "merge" not in setup:
        del files["merge"]
    if setup.get("objective") == "grpo":  # its rewards are the experiment's metric on each completion
        from tunepipe.scoring import LINE_OPTIONS

        metric_options = {k: v for k, v in (setup.get("score") or {}).items() if k not in LINE_OPTIONS}
        files["train"]["reward"] = {"metric": setup["metric"], "score": metric_options}
        # GRPO renders its prompts as it samples: with the chat template tokenize rendered them with
        files["train"]["chat_template"] = (setup.get("tokenize") or {}).get("chat_template")
    return files
