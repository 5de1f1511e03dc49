"""An experiment's settings as a stage reads them: data/config/<name>/<stage>.json, written by the config stage,
and the profile's params.yaml groups.

This is the one way in for a stage. Checking experiment files (the schema, the defaults, `resolve`) lives in
tunepipe/settings/schema.py and resolve.py, which only the config and plan stages import: changing how files
are checked re-runs the config stages, which re-write the same bytes, and nothing after them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tunepipe import stage
from tunepipe.errors import StageError
from tunepipe.layout import CONFIG, EXPERIMENTS, PARAMS


def experiment_names(root: Path = Path(".")) -> list[str]:
    folder = root / EXPERIMENTS
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_experiment(name: str, stage_name: str) -> dict[str, Any]:
    """The experiment as `stage_name` reads it: its own section (`setup[stage_name]`) and what it is (name,
    dataset, model, kind, method, ...), every default filled in and checked."""
    path = CONFIG / name / f"{stage_name}.json"
    if not path.exists():
        hint = (f"{where(name, 'merge')}: not set (merge: true asks for a merge stage)" if stage_name == "merge"
                else f"run dvc repro config@{name}")
        raise StageError(f"{path}: not found ({hint})")
    return {**json.loads(path.read_text(encoding="utf-8")), "name": name}


def where(name: str, section: str) -> str:
    """How an error names a setting: the experiment file (from the repository root) and the key."""
    return f"{stage.PROFILE + '/' if stage.PROFILE else ''}{EXPERIMENTS}/{name}.yaml {section}"


def load_params(group: str, item: str | None = None, path: Path = PARAMS,
                required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read params.yaml[group] (or [group][item]); a missing entry or required key names file and key."""
    if not path.exists():
        raise StageError(f"{path}: not found (run stages from the repository root)")
    params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if group not in params:
        raise StageError(f"{path}: no '{group}' group")
    section = params[group]
    if item is None:
        return section
    if not isinstance(section, dict) or item not in section:
        known = ", ".join(sorted(section)) if isinstance(section, dict) else "none"
        raise StageError(f"{path}: '{group}' has no entry '{item}' (known: {known})")
    require_keys(section[item], f"{path} {group}.{item}", *required)
    return section[item]


def require(params: dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(params, dict) or params.get(key) is None:
        raise StageError(f"{where}: missing required key '{key}'")
    return params[key]


def require_keys(params: dict[str, Any], where: str, *keys: str) -> None:
    missing = [key for key in keys if not isinstance(params, dict) or params.get(key) is None]
    if missing:
        raise StageError(f"{where}: missing required key{'s' * (len(missing) > 1)} {', '.join(missing)}")


def read_labels(setup: dict[str, Any]) -> list[str]:
    """The dataset's label order (data/converted/<dataset>/labels.json); a head needs one."""
    path = Path("data/converted") / setup["dataset"] / "labels.json"
    if not path.exists():
        raise StageError(f"{path}: not found (run dvc repro convert@{setup['dataset']})")
    labels = json.loads(path.read_text(encoding="utf-8"))
    if setup["kind"] in ("token_head", "sequence_head") and not labels:
        raise StageError(f"params.yaml experiments.{setup['name']}: a {setup['kind']} needs labelled data, "
                         f"but dataset '{setup['dataset']}' has no labels ({path} is empty)")
    return labels
