"""Your own data, end to end on a real git + DVC repository with the real SmolLM2 and MiniLM: the README's
"Your own data" experiment files (an Alpaca JSON, a ShareGPT multi-turn JSONL, a CSV of text,label and a hub
dataset at a pinned commit, served by a Hugging Face Hub of our own on localhost) each train and score in
the pipeline; then what DVC re-runs when one file changes, when only a label changes, and when a new file
is added without a plan."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, copy_project
from tests.hub_server import serve_hub
from tests.test_pipeline import ENV, sh, stages_run
from tests.test_resume import plan
from tests.workspace import edit, keep_experiments

REVISION = "bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c"  # nyu-mll/glue's, as the README pins it


def readme_experiments() -> dict[str, str]:
    """The experiment files the README's "Your own data" section shows, by the name its comment gives."""
    section = REPO.joinpath("README.md").read_text(encoding="utf-8").split("## Your own data", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(# (experiments/[\w-]+\.yaml)[^\n]*\n.*?)```", section, re.S)
    return {Path(path).stem: body for body, path in blocks}


def test_the_readme_shows_four_experiments_of_at_most_15_lines_that_match_the_files():
    shown = readme_experiments()
    assert set(shown) == {"own-alpaca-lora", "own-chat-lora", "own-reviews-head", "own-hub-head"}
    for name, body in shown.items():
        assert len(body.strip().splitlines()) <= 15, name
        if name != "own-hub-head":  # the default pipeline runs the other three as they are written
            assert (REPO / "experiments" / f"{name}.yaml").read_text(encoding="utf-8") == body, name


def mrpc_parquet(split: str) -> bytes:
    """GLUE's MRPC layout (sentence1, sentence2, label, idx) with the sample pairs of data/samples/mrpc."""
    rows = []
    for line in (REPO / "data/samples/mrpc" / f"sample_paraphrase_{'train' if split == 'train' else 'test'}.txt") \
            .read_text(encoding="utf-8-sig").splitlines()[1:]:
        quality, _, _, first, second = line.split("\t")
        rows.append({"sentence1": first, "sentence2": second, "label": int(quality), "idx": len(rows)})
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = copy_project(tmp_path_factory.mktemp("own-data"))
    keep_experiments(repo, ["own-alpaca-lora", "own-chat-lora", "own-reviews-head"])
    (repo / "experiments/own-hub-head.yaml").write_text(readme_experiments()["own-hub-head"])
    for name in ("own-alpaca-lora", "own-chat-lora", "own-reviews-head", "own-hub-head"):
        edit(repo / "experiments" / f"{name}.yaml", "train.max_steps", 2)
        edit(repo / "experiments" / f"{name}.yaml", "predict.max_new_tokens", 8)
    plan(repo)
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "own data")
    return repo


@pytest.fixture(scope="module")
def hub_env():
    files = {f"mrpc/{split}-00000-of-00001.parquet": mrpc_parquet(split) for split in ("train", "validation", "test")}
    files["README.md"] = b"# glue\n"
    with serve_hub({("dataset", "nyu-mll/glue"): files}, REVISION) as (url, hub):
        yield {**{k: v for k, v in ENV.items() if k != "HF_HUB_OFFLINE"}, "HF_ENDPOINT": url}, hub


def dvc(repo: Path, env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_each_of_your_own_data_trains_and_scores(repo, hub_env):
    env, hub = hub_env
    dvc(repo, env, "repro")
    for name, metric in (("own-alpaca-lora", "rougeL"), ("own-chat-lora", "rougeL"), ("own-reviews-head", "accuracy"),
                         ("own-hub-head", "accuracy")):
        scores = json.loads((repo / "reports/metrics" / f"{name}.json").read_text())
        assert scores["rows"] > 0 and metric in scores["before"] and metric in scores["after"], name
    # the hub dataset came through the real hub client, at the pinned commit, the test files left out
    fetched = sorted(p.relative_to(repo / "data/raw/own-hub-head").as_posix()
                     for p in (repo / "data/raw/own-hub-head").rglob("*") if p.is_file())
    assert fetched == ["mrpc/train-00000-of-00001.parquet", "mrpc/validation-00000-of-00001.parquet"]
    assert any(REVISION in request for request in hub.requests)
    ledger = json.loads((repo / "reports/ledger/own-hub-head.json").read_text())
    assert ledger["rejected"] == 0 and set(ledger["written_by_split"]) == {"train", "validation", "test"}
    chat = [json.loads(line) for line in (repo / "data/converted/own-chat-lora/train.jsonl").read_text().splitlines()]
    assert all(len(row["messages"]) == 5 for row in chat)  # system + two user/assistant exchanges
    report = (repo / "reports/README.md").read_text()
    assert "## your own data" in report and "own-hub-head" in report


def test_a_label_re_runs_nothing_but_its_config_and_the_report(repo, hub_env):
    env, _ = hub_env
    edit(repo / "experiments/own-reviews-head.yaml", "task", "product reviews")
    ran = stages_run(dvc(repo, env, "repro").stdout)
    assert ran == {"plan", "config@own-reviews-head", "report"}
    assert "## product reviews" in (repo / "reports/README.md").read_text()


def test_one_experiment_s_change_re_runs_only_that_experiment(repo, hub_env):
    env, _ = hub_env
    edit(repo / "experiments/own-reviews-head.yaml", "train.learning_rate", 0.0001)
    ran = stages_run(dvc(repo, env, "repro").stdout)
    assert {"config@own-reviews-head", "train@own-reviews-head", "predict_after@own-reviews-head"} <= ran
    assert all(stage in ("plan", "report") or stage.endswith("@own-reviews-head") for stage in ran), ran


def test_a_new_experiment_file_is_never_silently_left_out(repo, hub_env):
    env, _ = hub_env
    source = (repo / "experiments/own-reviews-head.yaml").read_text()
    (repo / "experiments/own-reviews-again.yaml").write_text(source)
    refused = dvc(repo, env, "repro", check=False)
    assert refused.returncode != 0
    assert "dvc.yaml is out of date with experiments/ and params.yaml" in refused.stderr + refused.stdout
    assert "make plan" in refused.stderr + refused.stdout
    plan(repo)
    ran = stages_run(dvc(repo, env, "repro").stdout)
    assert {"config@own-reviews-again", "train@own-reviews-again", "score@own-reviews-again"} <= ran
    assert not [s for s in ran if s.endswith(("@own-alpaca-lora", "@own-chat-lora", "@own-hub-head"))]


def test_exp_run_sets_a_key_of_an_experiment_file(repo, hub_env):
    env, _ = hub_env
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "results")
    dvc(repo, env, "exp", "run", "-n", "lr3", "-S", "experiments/own-reviews-head.yaml:train.learning_rate=0.0003")
    shown = dvc(repo, env, "exp", "show", "--no-pager", "--md", "--only-changed").stdout
    assert "lr3" in shown and "train.learning_rate" in shown and "0.0003" in shown
