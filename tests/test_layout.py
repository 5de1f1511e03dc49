"""How the code is laid out: the library in tunepipe/ (the one package the distribution installs), stages/ only
entry points, every module and function small; and a train setting declared once reaches all that reads it."""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Annotated

import pytest

from tests.conftest import REPO
from tunepipe import checkpoints, merging
from tunepipe.settings import train as train_settings
from tunepipe.settings.fields import Number
from tunepipe.settings.train import Feeds
from tunepipe.training import training_arguments

CHECKED = ("tunepipe", "stages", "flows", "bench")  # tests are left out: a test may be long to read plainly


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def test_stage_files_are_entry_points_only():
    """A stage file defines `main` and nothing else that runs (constants aside) and hands it to run_stage."""
    for path in python_files("stages"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        if path.name == "__init__.py":
            assert defined == [], path
            continue
        assert defined == ["main"], f"{path.relative_to(REPO)} defines {defined}: library code goes in tunepipe/"
        assert "run_stage(main" in path.read_text(encoding="utf-8").rsplit('if __name__ == "__main__":', 1)[-1], path


def test_no_module_over_300_lines_and_no_function_over_60():
    too_long = []
    for path in python_files(*CHECKED):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 300:
            too_long.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: "
                                f"{node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long


def test_the_distribution_installs_only_tunepipe(tmp_path):
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert packages and all(name.split(".")[0] == "tunepipe" for name in packages), packages
    # from outside the repository (no checkout on the path), only tunepipe is importable
    found = subprocess.run([sys.executable, "-c", "import importlib.util as u; "
                            "print([n for n in ('tunepipe', 'stages', 'flows') if u.find_spec(n)])"],
                           cwd=tmp_path, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert found.stdout.strip() == "['tunepipe']", found.stderr


# --- one place per setting ------------------------------------------------------------------------------

class Extended(train_settings.Train):
    """The Train schema with three new settings, each declared once, as a contributor would add them."""
    adam_beta2: Annotated[Number | None, Feeds("adam_beta2")] = None  # a TrainingArguments field: changes results
    data_seed_note: Annotated[str | None, Feeds(effect="machine")] = None  # fingerprinted, not on the card
    log_every: Annotated[int | None, Feeds("logging_steps", effect="none")] = None  # how the run is carried out


SETUP = {"seed": 0, "method": "lora", "generates": True, "kind": "causal_lm", "model": "m", "dataset": "d"}
PARAMS = {"lora": {"r": 2, "alpha": 4.0, "dropout": 0.0}, "learning_rate": 0.001, "epochs": 1.0, "batch_size": 2,
          "threads": 2}


def reached(params: dict, tmp_path: Path) -> tuple[object, dict, str]:
    """What the three readers make of `params`: TrainingArguments, the fingerprint, the merged model's card."""
    base, trained = tmp_path / "base", tmp_path / "trained"
    base.mkdir(exist_ok=True)
    trained.mkdir(exist_ok=True)
    (base / "config.json").write_text("{}")
    (trained / "adapter_model.safetensors").write_bytes(b"adapter")
    args = training_arguments(params, SETUP, tmp_path / "scratch", evaluate=False, precision="fp32")
    made_from = checkpoints.fingerprint(SETUP, params, "data-digest", base)
    check = {"dtype": "float32", "inputs": 3, "max_abs_logit_difference": 0.0, "tolerance": 0.001}
    card = merging.model_card("x", {**SETUP, "train": params}, {}, check, False, trained)
    return args, made_from, card


def test_a_setting_declared_once_reaches_the_arguments_the_fingerprint_and_the_card(tmp_path, monkeypatch):
    monkeypatch.setattr(train_settings, "Train", Extended)
    args, made_from, card = reached(PARAMS, tmp_path)
    assert args.adam_beta2 == 0.999 and "adam_beta2" not in card  # unset: the Trainer's own default
    args, beta_set, card = reached({**PARAMS, "adam_beta2": 0.95}, tmp_path)
    assert args.adam_beta2 == 0.95
    assert beta_set["params"] != made_from["params"]  # a checkpoint of the other beta is not resumed
    assert "adam_beta2: 0.95" in card

    _, machine, card = reached({**PARAMS, "data_seed_note": "node-7"}, tmp_path)
    assert machine["params"] != made_from["params"] and "node-7" not in card

    args, run_only, card = reached({**PARAMS, "log_every": 7}, tmp_path)
    assert args.logging_steps == 7
    assert run_only["params"] == made_from["params"] and "log_every" not in card


def test_every_train_setting_declares_what_it_feeds():
    declared = train_settings.declarations()
    assert set(declared) == set(train_settings.Train.model_fields)
    assert declared["checkpoint_steps"].effect == "none" and declared["threads"].effect == "machine"


@pytest.mark.parametrize("key", ["checkpoint_steps", "memory_limit_gb"])
def test_settings_that_change_no_result_leave_checkpoints_resumable(key, tmp_path):
    _, made_from, card = reached(PARAMS, tmp_path)
    _, changed, other_card = reached({**PARAMS, key: 3}, tmp_path)
    assert changed == made_from and card == other_card
