"""SFT, then DPO and KTO from it (`init_from`), on a real git + DVC repository with the real SmolLM2: the chain
is in DVC's graph, so a change to the SFT re-runs the SFT and what builds on it, and nothing else (DVC's own
output says which stages ran); the preference runs' rewards are DVC metrics beside the losses."""
from __future__ import annotations

import json

import pytest

from tests.conftest import copy_project
from tests.test_pipeline import sh, stages_run
from tests.test_resume import plan
from tests.workspace import edit, keep_experiments

SFT, DPO, KTO, OTHER = "own-chat-lora", "own-chat-dpo", "own-chat-kto", "own-notes-lora"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_project(tmp_path_factory.mktemp("objectives"))
    keep_experiments(repo, [SFT, DPO, KTO, OTHER])
    for name in (SFT, DPO, KTO, OTHER):
        for key, value in (("train.max_steps", 2), ("train.batch_size", 2), ("predict.max_rows", 2),
                           ("predict.max_new_tokens", 8)):
            edit(repo / "experiments" / f"{name}.yaml", key, value)
    plan(repo)
    for command in (("git", "init", "-q"), ("git", "add", "-A"), ("git", "commit", "-qm", "chain under test")):
        sh(repo, *command)
    sh(repo, "dvc", "repro")
    return repo


def test_the_dpo_s_rewards_are_dvc_metrics(repo):
    metrics = json.loads(sh(repo, "dvc", "metrics", "show", "--json").stdout)
    found = metrics[""]["data"]  # the workspace's
    live = found[f"reports/train/{DPO}/live/metrics.json"]["data"]
    assert set(live["train"]["rewards"]) == {"chosen", "rejected", "margins", "accuracies"}
    kto = found[f"reports/train/{KTO}/live/metrics.json"]["data"]
    assert set(kto["train"]["rewards"]) == {"chosen", "rejected", "margins"} and "kl" in kto["train"]
    assert "rewards" not in found[f"reports/train/{SFT}/live/metrics.json"]["data"]["train"]


def test_editing_the_sft_re_runs_the_sft_and_what_starts_from_it_and_nothing_else(repo):
    predictions = {name: [path.read_text() for path in sorted((repo / f"data/predictions/{name}").glob("*.jsonl"))]
                   for name in (SFT, DPO, KTO)}
    edit(repo / "experiments" / f"{SFT}.yaml", "train.learning_rate", 0.0002)
    ran = stages_run(sh(repo, "dvc", "repro").stdout)
    required = {"plan", f"config@{SFT}", f"train@{SFT}", f"predict_after@{SFT}", "report",
                *(f"{stage}@{name}" for name in (DPO, KTO) for stage in ("train", "predict_before", "predict_after"))}
    # a score re-runs only where its predictions changed (DVC compares content)
    rescored = {f"score@{name}" for name in (SFT, DPO, KTO) if predictions[name] != [
        path.read_text() for path in sorted((repo / f"data/predictions/{name}").glob("*.jsonl"))]}
    assert ran == required | rescored
    assert not any(stage.endswith(f"@{OTHER}") or stage.startswith(("tokenize", "convert")) for stage in ran)
    assert json.loads(sh(repo, "dvc", "status", "--json").stdout) == {}
