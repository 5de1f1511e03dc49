"""Profiles and the seeds' presets: folders laid out like the root, each planned into its own dvc.yaml and run
by the same stages.

Each preset runs here with its exact settings except three swaps: its hub model becomes a tiny model of the
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

from stages import config as config_stage
from stages import convert as convert_stage
from stages import merge as merge_stage
from stages import predict as predict_stage
from stages import score as score_stage
from stages import tokenize as tokenize_stage
from stages import train as train_stage
from tunepipe.hub import COMMIT
from tests.conftest import REPO, copy_project
from tests.tiny_models import write_tiny_model
from tests.workspace import edit, read_yaml

PRESETS = sorted(p.name for p in (REPO / "profiles").iterdir() if p.name.startswith("seed-"))
ARCHITECTURE = {"flan-t5-base": "t5", "gpt-neo-1.3b": "gpt_neo", "llama-2-7b-chat": "llama", "phi-2": "phi",
                "gpt2": "gpt2"}
SEEDS = {"seed-flan-t5-word-sense", "seed-gpt-neo", "seed-llama2-webqa", "seed-phi2-dialogsum", "seed-gpt2-sentiment"}


def test_every_seed_setup_has_a_preset():
    assert set(PRESETS) == SEEDS


def plan(root: Path, folder: str = "") -> dict:
    result = subprocess.run([sys.executable, "-m", "stages.plan", *(["--profile", folder] if folder else [])],
                            cwd=root, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stderr
    return yaml.safe_load((root / folder / "dvc.yaml").read_text())


def output_paths(pipeline: dict) -> set[str]:
    found = set()
    for stage in pipeline["stages"].values():
        body = stage.get("do", stage)
        for key in ("outs", "metrics", "plots"):
            for out in body.get(key) or []:
                found.add(next(iter(out)) if isinstance(out, dict) else out)
    return found


def test_profiles_live_side_by_side_each_planned_into_its_own_folder(tmp_path):
    """Planning every profile rewrites no file but its own dvc.yaml, every output stays inside the profile's
    folder, and no two profiles share an output path (DVC would refuse the repository)."""
    root = copy_project(tmp_path / "repo")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != "dvc.yaml"}
    folders = ["", "profiles/real", *(f"profiles/{name}" for name in PRESETS)]
    outputs = {folder: output_paths(plan(root, folder)) for folder in folders}
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != "dvc.yaml"} == before
    for folder, paths in outputs.items():
        inside_folder = (lambda p: p.startswith(f"{folder}/")) if folder else (lambda p: not p.startswith("profiles/"))
        assert paths and all(inside_folder(p) for p in paths), folder
    assert sum(map(len, outputs.values())) == len(set().union(*outputs.values()))  # disjoint
    for folder in ("", "profiles/real"):  # the committed ones are what the plan writes
        assert (root / folder / "dvc.yaml").read_text() == (REPO / folder / "dvc.yaml").read_text()


def test_real_profile_reads_the_real_releases_and_scores_every_test_row():
    from tunepipe.settings.resolve import resolve
    from tests.workspace import inside

    params = read_yaml(REPO / "profiles/real/params.yaml")
    assert all(entry["path"].startswith("../../../shared/data/") for entry in params["datasets"].values())
    with inside(REPO / "profiles/real"):
        names = sorted(p.stem for p in Path("experiments").glob("*.yaml"))
        setups = [resolve(name) for name in names]
    # the six of the issue, WebQA's answerable-or-not decision (MiniLM, Gemma) on its own, its DPO after its SFT
    assert names == ["dialogsum-lora", "jnlpba-full", "mrpc-head", "phrasebank-head", "phrasebank-lora", "webqa-dpo",
                     "webqa-gate", "webqa-gemma-gate", "webqa-lora"]
    assert all(setup["predict"].get("max_rows") is None for setup in setups)


def workspace(root: Path, preset: str) -> list[str]:
    """The preset's own files, its hub models swapped for tiny ones of the same architecture, its data for the
    sample files as download leaves them, two training steps and two predicted rows."""
    folder = REPO / "profiles" / preset
    shutil.copy(folder / "params.yaml", root / "params.yaml")
    shutil.copytree(folder / "experiments", root / "experiments")
    params = read_yaml(root / "params.yaml")
    for name, entry in params["models"].items():
        assert entry["source"] == "hub" and COMMIT.match(entry["revision"]), name  # pinned to a commit
        write_tiny_model(ARCHITECTURE[name], root / "models/base" / name)
    for dataset in params["datasets"]:  # the sample files in the release's format, as download leaves them
        shutil.copytree(REPO / "data/samples" / dataset, root / "data/raw" / dataset)
    names = sorted(p.stem for p in (root / "experiments").glob("*.yaml"))
    for name in names:
        for key, value in (("train.max_steps", 2), ("train.threads", 2), ("predict.max_rows", 2)):
            edit(root / "experiments" / f"{name}.yaml", key, value)
        config_stage.main([name])
    return names


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_its_exact_settings_on_a_tiny_model_of_its_architecture(preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = workspace(tmp_path, preset)
    for dataset in read_yaml(tmp_path / "params.yaml")["datasets"]:
        convert_stage.main([dataset])
    for name in names:
        tokenize_stage.main([name])
        train_stage.main([name])
        for which in ("before", "after"):
            predict_stage.main([name, which])
        wants_merge = "merge" in read_yaml(tmp_path / "experiments" / f"{name}.yaml")
        assert Path(f"data/config/{name}/merge.json").exists() == wants_merge
        if wants_merge:
            merge_stage.main([name])
            assert json.loads(Path(f"models/merged/{name}/merge_check.json").read_text())["passed"]
        score_stage.main([name])
        metrics = json.loads(Path(f"reports/metrics/{name}.json").read_text())
        assert metrics["rows"] == 2 and set(metrics) == {"rows", "before", "after", "gain"}
        assert json.loads(Path(f"reports/train/{name}/summary.json").read_text())["steps"] == 2


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_fails_fast_offline_with_one_line(preset, tmp_path):
    shutil.copy(REPO / "profiles" / preset / "params.yaml", tmp_path / "params.yaml")
    model, entry = next(iter(read_yaml(tmp_path / "params.yaml")["models"].items()))
    # the real check (can the hub be reached?) against an endpoint that refuses at once, so a machine with a
    # network does not start fetching gigabytes
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(PYTHONPATH=str(REPO), HF_ENDPOINT="https://127.0.0.1:9")
    result = subprocess.run([sys.executable, "-m", "stages.fetch_model", model], cwd=tmp_path, capture_output=True,
                            text=True, env=env, timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot ") and entry["repo_id"] in lines[0]


def test_only_runs_an_experiment_s_merge_as_well_as_its_score():
    """`--only` names score@<exp> (which pulls in everything up to the predictions) and, for an experiment
    that merges, merge@<exp>: a leaf no other stage needs, which a run of score alone leaves out."""
    from flows.profile import targets

    assert targets("profiles/real", ["webqa-lora", "mrpc-head"]) == [
        "profiles/real/dvc.yaml:score@webqa-lora", "profiles/real/dvc.yaml:merge@webqa-lora",
        "profiles/real/dvc.yaml:score@mrpc-head"]
    with pytest.raises(SystemExit, match="does not have"):
        targets("profiles/real", ["no-such-experiment"])
