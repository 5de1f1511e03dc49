"""An experiment's settings as a stage reads them: data/config/<name>/<stage>.json, written by the config stage.

Kept apart from the schema (stages/schema.py) so that a stage depends on its settings file and this small
reader, not on the code that checks experiment files: changing how files are checked re-runs the config
stages, which re-write the same bytes, and nothing after them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stages import common
from stages.common import StageError

CONFIG = Path("data/config")
EXPERIMENTS = Path("experiments")  # in the profile's folder (the repository root for the default profile)


def experiment_names(root: Path = Path(".")) -> list[str]:
    folder = root / EXPERIMENTS
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_experiment(name: str, stage: str) -> dict[str, Any]:
    """The experiment as `stage` reads it: its own section (`setup[stage]`) and what it is (name, dataset,
    model, kind, method, ...), every default filled in and checked."""
    path = CONFIG / name / f"{stage}.json"
    if not path.exists():
        hint = (f"{where(name, 'merge')}: not set (merge: true asks for a merge stage)" if stage == "merge"
                else f"run dvc repro config@{name}")
        raise StageError(f"{path}: not found ({hint})")
    return {**json.loads(path.read_text(encoding="utf-8")), "name": name}


def where(name: str, section: str) -> str:
    """How an error names a setting: the experiment file (from the repository root) and the key."""
    return f"{common.PROFILE + '/' if common.PROFILE else ''}{EXPERIMENTS}/{name}.yaml {section}"
