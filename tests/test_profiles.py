"""Profiles and the seeds' presets: overlays of params.yaml run by the same stages.

Each preset runs here with its exact params except three swaps: its hub model becomes a tiny model of the
same architecture built from a config, its data the project's sample files, and training stops after two
steps. Offline, each preset's model fetch fails at once with one line.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.profile import apply, load_profile
from stages import convert as convert_stage
from stages import merge as merge_stage
from stages import predict as predict_stage
from stages import score as score_stage
from stages import tokenize as tokenize_stage
from stages import train as train_stage
from stages.common import COMMIT
from tests.conftest import REPO
from tests.tiny_models import write_tiny_model

PRESETS = sorted(p.stem for p in (REPO / "profiles").glob("seed-*.yaml"))
ARCHITECTURE = {"flan-t5-base": "t5", "gpt-neo-1.3b": "gpt_neo", "llama-2-7b-chat": "llama", "phi-2": "phi",
                "gpt2": "gpt2"}
SEEDS = {"seed-flan-t5-word-sense", "seed-gpt-neo", "seed-llama2-webqa", "seed-phi2-dialogsum", "seed-gpt2-sentiment"}


def default_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def test_every_seed_setup_has_a_preset():
    assert set(PRESETS) == SEEDS


def test_overlay_merges_replaces_removes_and_narrows():
    params = {"experiments": {"a": {"model": "x", "dataset": "one"}, "b": {"model": "y", "dataset": "two"}},
              "train": {"a": {"lr": 1, "epochs": 2}}, "fetch_model": {"x": {}, "y": {}},
              "download": {"one": {"path": "p"}, "two": {"path": "q"}}, "report": {"dir": "reports"}}
    overlay = {"replace": ["experiments"], "experiments": {"c": {"model": "z", "dataset": "one"}},
               "train": {"a": {"lr": 5}}, "download": {"two": None}, "report": {"dir": "reports/real"}}
    merged = apply(params, overlay)
    assert merged["experiments"] == {"c": {"model": "z", "dataset": "one"}}  # replaced
    assert merged["train"] == {"a": {"lr": 5, "epochs": 2}}               # merged key by key
    assert merged["download"] == {"one": {"path": "p"}}                   # null removes
    assert merged["report"] == {"dir": "reports/real"}
    only = apply(params, {}, only=["b"])
    assert list(only["experiments"]) == ["b"] and only["train"] == {}     # a stage exists only for b
    assert only["fetch_model"] == {"y": {}} and list(only["download"]) == ["two"]  # and what b uses
    with pytest.raises(SystemExit, match="--only names experiments the profile does not have: \\['nope'\\]"):
        apply(params, {}, only=["nope"])


def test_real_profile_reads_the_real_releases_and_scores_every_test_row():
    merged = apply(default_params(), load_profile("real"))
    assert all(entry["path"].startswith("../shared/data/") for entry in merged["download"].values())
    assert all(entry["max_rows"] is None for entry in merged["predict"].values())
    assert merged["report"]["dir"] == "reports/real"
    assert set(merged["experiments"]) == set(merged["train"]) == set(merged["predict"]) == set(merged["score"])


def workspace(root: Path, preset: str) -> dict:
    params = apply(default_params(), load_profile(preset))
    (root / "metrics").symlink_to(REPO / "metrics")  # the score stage loads the project's metric modules
    for name, entry in params["fetch_model"].items():
        assert entry["source"] == "hub" and COMMIT.match(entry["revision"]), name  # pinned to a commit
        write_tiny_model(ARCHITECTURE[name], root / "models/base" / name)
    for dataset in params["download"]:  # the sample files in the release's format, as download leaves them
        shutil.copytree(REPO / "data/samples" / dataset, root / "data/raw" / dataset)
    for name in params["train"]:
        params["train"][name].update(max_steps=2, threads=2)
        params["predict"][name]["max_rows"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    return params


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_its_exact_params_on_a_tiny_model_of_its_architecture(preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = workspace(tmp_path, preset)
    for dataset in params["convert"]:
        convert_stage.main([dataset])
    for name in params["experiments"]:
        tokenize_stage.main([name])
        train_stage.main([name])
        for which in ("before", "after"):
            predict_stage.main([name, which])
        if name in params["merge"]:
            merge_stage.main([name])
            assert json.loads(Path(f"models/merged/{name}/merge_check.json").read_text())["passed"]
        score_stage.main([name])
        metrics = json.loads(Path(f"reports/metrics/{name}.json").read_text())
        assert metrics["rows"] == 2 and set(metrics) == {"rows", "before", "after", "gain"}
        assert json.loads(Path(f"reports/train/{name}/summary.json").read_text())["steps"] == 2


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_fails_fast_offline_with_one_line(preset, tmp_path):
    params = apply(default_params(), load_profile(preset))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    model = next(iter(params["fetch_model"]))
    # the real check (can the hub be reached?) against an endpoint that refuses at once, so a machine with a
    # network does not start fetching gigabytes
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(PYTHONPATH=str(REPO), HF_ENDPOINT="https://127.0.0.1:9")
    result = subprocess.run([sys.executable, "-m", "stages.fetch_model", model], cwd=tmp_path, capture_output=True,
                            text=True, env=env, timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot ") and params["fetch_model"][model]["repo_id"] in lines[0]
