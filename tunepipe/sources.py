"""Where an experiment's data and base model come from, and the checks every settings file goes through.

A dataset (download + convert) or a base model (fetch_model) is an entry of the profile's params.yaml
(`datasets:`, `models:`), shared by every experiment that names it, or an experiment's own `dataset:` /
`model:` mapping (then its stages are named after the experiment). Every file is read through
`check_file`: an unknown key or a wrong type is one line naming the file, the line and the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from tunepipe.errors import StageError
from tunepipe.formats import READERS
from tunepipe.layout import CODE_ROOT, EXPERIMENTS, PARAMS
from tunepipe.settings import where
from tunepipe.settings.fields import Strict

# --- where the data and the base model come from --------------------------------------------------------

class DataSpec(Strict):
    """download + convert of one dataset. `source` may be left out: a path means local, a url url, a
    repo_id the Hugging Face Hub."""
    source: Literal["local", "url", "hub"] | None = None
    path: str | None = None
    url: str | None = None
    sha256: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    files: list[str] | None = None  # hub: only these globs
    follow: bool | None = None
    extract: bool | None = None
    max_bytes: int | None = Field(default=None, gt=0)
    max_files: int | None = Field(default=None, gt=0)
    format: str | None = None
    max_reject_rate: float | None = Field(default=None, ge=0, le=1)
    max_drop_rate: float | None = Field(default=None, ge=0, le=1)
    split: dict[Literal["train", "validation", "test"], float] | None = None
    release_splits: dict[str, Any] | None = None
    swapped_pair_copies: bool | None = None
    seed: str | None = None  # salt of the split hash
    options: dict[str, Any] | None = None

    @field_validator("format")
    @classmethod
    def known_format(cls, value: str | None) -> str | None:
        if value is not None and value not in READERS:
            raise ValueError(f"unknown format '{value}' (known: {', '.join(sorted(READERS))})")
        return value


DOWNLOAD_KEYS = ("source", "path", "url", "sha256", "repo_id", "revision", "files", "follow", "extract",
                 "max_bytes", "max_files")


class ModelSpec(Strict):
    source: Literal["package", "local", "hub"] | None = None
    package: str | None = None
    gguf_file: str | None = None
    assemble: bool = False  # the package's assemble(path) writes gguf_file from chunk packages
    subfolder: str | None = None
    sha256: str | None = None
    path: str | None = None
    repo_id: str | None = None
    revision: str | None = None


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise StageError(f"{path}: not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise StageError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StageError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    return data


def key_line(path: Path, keys: tuple) -> int | None:
    """The line where a key path (('train', 'eval_step')) is written in a YAML file, for error messages."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            break
        for name, value in node.value:
            if name.value == str(key):
                line, node = name.start_mark.line + 1, value
                break
        else:
            break
    return line


def problem(error: dict[str, Any], model: type[BaseModel]) -> tuple[tuple, str]:
    """One pydantic error as (key path, what is wrong), in words a user of the file can act on."""
    loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and (
        part in ("str", "bool", "DataSpec", "ModelSpec", "Merge") or part.startswith(("literal[", "function-")))))
    if error["type"] == "extra_forbidden":
        parent = model
        for part in loc[:-1]:
            field = parent.model_fields.get(str(part)) if isinstance(parent, type) else None
            inner = [a for a in getattr(field.annotation, "__args__", (field.annotation,)) if isinstance(a, type)
                     and issubclass(a, BaseModel)] if field else []
            parent = inner[0] if inner else None
        known = ", ".join(parent.model_fields) if isinstance(parent, type) else ""
        return loc, "unknown key" + (f" (known: {known})" if known else "")
    message = error["msg"].removeprefix("Value error, ")
    if "input" in error and error["type"] not in ("missing",) and not isinstance(error["input"], dict):
        message += f", got {error['input']!r}"
    return loc, message


def check_file(data: dict[str, Any], path: Path, model: type[BaseModel]) -> BaseModel:
    """Validate one file's contents; the first problem is one line naming the file, line and key."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        # a union (a name or a mapping) fails once per branch: the most specific error says the most
        first = max(err.errors(), key=lambda e: (e["type"] == "extra_forbidden", len(e["loc"])))
        loc, message = problem(first, model)
        line = key_line(path, loc)
        where = f"{shown(path)}:{line}" if line else str(shown(path))
        raise StageError(f"{where}: {'.'.join(map(str, loc))}: {message}") from None


def shown(path: Path) -> Path:
    """A path as the user would type it from the repository root (profiles/real/experiments/x.yaml), else
    from the working folder."""
    for base in (CODE_ROOT, Path.cwd().resolve()):
        try:
            return path.resolve().relative_to(base)
        except ValueError:
            continue
    return path


def registry_entry(group: str, name: str, model: type[BaseModel], root: Path = Path(".")) -> dict[str, Any]:
    """params.yaml datasets.<name> / models.<name> of the profile, checked."""
    params = read_yaml(root / PARAMS)
    entries = params.get(group) or {}
    if name not in entries:
        raise StageError(f"{shown(root / PARAMS)}: no {group}.{name} (known: {', '.join(sorted(entries)) or 'none'})")
    entry = entries[name] or {}
    try:
        return model.model_validate(entry).model_dump(exclude_unset=True)
    except ValidationError as err:
        loc, message = problem(err.errors()[0], model)
        full = (group, name, *loc)
        line = key_line(root / PARAMS, full)
        raise StageError(f"{shown(root / PARAMS)}{f':{line}' if line else ''}: {'.'.join(map(str, full))}: {message}") from None


def infer_source(spec: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key, source in keys:
        if spec.get(key):
            return source
    return None




def data_params(name: str) -> tuple[dict[str, Any], str]:
    """(download + convert spec, where it is written) of dataset `name`: an experiment's own, or params.yaml's."""
    own = own_entry(name, "dataset", DataSpec)
    spec, place = own if own else (registry_entry("datasets", name, DataSpec), f"params.yaml datasets.{name}")
    spec.setdefault("source", infer_source(spec, (("path", "local"), ("url", "url"), ("repo_id", "hub"))))
    return spec, place


def model_params(name: str) -> tuple[dict[str, Any], str]:
    own = own_entry(name, "model", ModelSpec)
    spec, place = own if own else (registry_entry("models", name, ModelSpec), f"params.yaml models.{name}")
    spec.setdefault("source", infer_source(spec, (("package", "package"), ("path", "local"), ("repo_id", "hub"))))
    return spec, place


def own_entry(name: str, key: str, model: type[BaseModel]) -> tuple[dict[str, Any], str] | None:
    """experiments/<name>.yaml's `key` when it is a mapping (the experiment's own data or model), checked."""
    path = EXPERIMENTS / f"{name}.yaml"
    entry = read_yaml(path).get(key) if path.exists() else None
    if not isinstance(entry, dict):
        return None
    try:
        return model.model_validate(entry).model_dump(exclude_unset=True), where(name, key)
    except ValidationError as err:
        loc, message = problem(err.errors()[0], model)
        line = key_line(path, (key, *loc))
        raise StageError(f"{shown(path)}{f':{line}' if line else ''}: {'.'.join(map(str, (key, *loc)))}: {message}") from None
