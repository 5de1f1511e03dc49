"""Scratch workspaces laid out like a profile: params.yaml (models, datasets, report), experiments/*.yaml,
and each experiment's settings written by the real config stage, so stages can run in-process on them."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import yaml


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    here = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


def write_yaml(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def write_experiment(root: Path, name: str, spec: dict[str, Any], configure: bool = True) -> str:
    """experiments/<name>.yaml, then the config stage for it (what DVC runs before every other stage)."""
    write_yaml(root / "experiments" / f"{name}.yaml", spec)
    if configure:
        from stages import config

        with inside(root):
            config.main([name])
    return name


def edit(path: Path, dotted: str, value: Any) -> None:
    """Set one key (`train.max_steps`) of a YAML file, creating the mappings on the way; None deletes it."""
    data = read_yaml(path)
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    write_yaml(path, data)


def keep_experiments(root: Path, names: list[str]) -> None:
    """Only these experiment files stay, and only the datasets and models they use."""
    for path in (root / "experiments").glob("*.yaml"):
        if path.stem not in names:
            path.unlink()
    kept = [read_yaml(root / "experiments" / f"{name}.yaml") for name in names]
    params = read_yaml(root / "params.yaml")
    for group, key in (("datasets", "dataset"), ("models", "model")):
        used = {spec[key] for spec in kept if isinstance(spec.get(key), str)}
        params[group] = {name: entry for name, entry in (params.get(group) or {}).items() if name in used}
    write_yaml(root / "params.yaml", params)
