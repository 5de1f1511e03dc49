"""The project's own pipeline through Prefect, against a real Prefect server: one task per DVC stage with the
real MiniLM on small settings, the artifacts a user reads in the UI, and the scheduled retraining deployment run
by a real process worker."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_project
from tests.test_flow import BOOKKEEPING, artifacts, git, task_runs
from tests.test_resume import plan
from tests.workspace import edit, keep_experiments

BIN = Path(sys.executable).parent
EXPERIMENT = "phrasebank-head"  # MiniLM with a classification head: the quickest experiment to train
POOL = "tunepipe-test-pool"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = copy_project(tmp_path_factory.mktemp("flowrepo"))
    keep_experiments(repo, [EXPERIMENT])
    set_train_steps(repo, 2)
    edit(repo / "experiments" / f"{EXPERIMENT}.yaml", "train.batch_size", 4)
    plan(repo)
    (repo / ".dvc" / "config").write_text((repo / ".dvc" / "config").read_text().replace(
        "../../tunepipe-dvc-remote", str(remote_of(repo))))  # a remote of this test's own
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "pipeline under test")
    return repo


@pytest.fixture(autouse=True)
def venv_on_path(monkeypatch):
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")


def remote_of(repo: Path) -> Path:
    return repo.parent / f"{repo.name}-remote"


def set_train_steps(repo: Path, steps: int) -> None:
    edit(repo / "experiments" / f"{EXPERIMENT}.yaml", "train.max_steps", steps)


def test_pipeline_flow_shows_every_stage_then_every_stage_skipped(prefect_api, repo):
    from flows.pipeline import pipeline, stage_graph, stage_order

    stages = stage_order(stage_graph(str(repo)))
    assert len(stages) == 11 and stages[0] == "plan" and stages[-1] == "report"
    first = pipeline(repo=str(repo), return_state=True)
    assert first.result()["ran"] == stages
    runs = task_runs(first)
    assert {name: run.state.name for name, run in runs.items() if not name.startswith(BOOKKEEPING)} == {
        stage: "Completed" for stage in stages}
    for earlier, later in zip(stages, stages[1:]):
        assert runs[earlier].end_time <= runs[later].start_time  # one after another, in DVC's order

    [scores] = artifacts(first, "scores")
    table = json.loads(scores.data) if isinstance(scores.data, str) else scores.data
    reported = json.loads((repo / "reports/metrics" / f"{EXPERIMENT}.json").read_text())
    assert [(row["experiment"], row["metric"], row["before"], row["after"]) for row in table] == [
        (EXPERIMENT, metric, reported["before"][metric], value) for metric, value in reported["after"].items()]
    [report] = artifacts(first, "report")
    assert "](data:image/png;base64," in report.data and "](plots/" not in report.data  # the UI shows the plots

    second = pipeline(repo=str(repo), return_state=True)
    assert second.result()["skipped"] == stages
    assert {run.state.name for name, run in task_runs(second).items() if not name.startswith(BOOKKEEPING)} == {"Skipped"}
    status = subprocess.run(["dvc", "status", "--json"], cwd=repo, capture_output=True, text=True, check=True)
    assert json.loads(status.stdout) == {}


def test_scheduled_retraining_deployment_runs_through_a_process_worker(prefect_api, repo):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from flows.retrain import deploy, retrain_params

    subprocess.run(["dvc", "repro", "-q"], cwd=repo, check=True)  # a no-op after the test above
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "the previous run: what the retraining's metrics diff compares with")
    set_train_steps(repo, 3)  # what changed since: one more training step
    subprocess.run([str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process"], check=True,
                   capture_output=True)
    settings = retrain_params(str(repo))
    deployment_id = deploy(str(repo), POOL, settings)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
    [schedule] = deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == ("0 3 * * 1", "UTC", True)
    assert deployment.work_pool_name == POOL and deployment.parameters == {"repo": str(repo)}

    flow_run = run_deployment(f"tunepipe-retrain/{settings['deployment']}", timeout=0)  # "run now", as the UI's button
    worker = subprocess.run([str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--run-once"],
                            capture_output=True, text=True, timeout=900)
    with get_client(sync_client=True) as client:
        finished = client.read_flow_run(flow_run.id)
    assert finished.state.is_completed(), f"{finished.state}\n{worker.stdout[-3000:]}\n{worker.stderr[-3000:]}"
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

        [diff] = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["metrics-diff"]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
    rows = {(row["experiment"], row["metric"]): row for row in
            (json.loads(diff.data) if isinstance(diff.data, str) else diff.data)}
    live = json.loads((repo / "reports/train" / EXPERIMENT / "live/metrics.json").read_text())
    assert live["step"] == 3
    step = rows[("reports/train/phrasebank-head/live/metrics.json", "step")]
    assert (step["previous"], step["now"], step["change"]) == (2, 3, 1)
    loss = rows[("reports/train/phrasebank-head/live/metrics.json", "train.loss")]
    assert loss["now"] == live["train"]["loss"] and loss["change"] == pytest.approx(loss["now"] - loss["previous"])
    assert ("phrasebank-head", "after.accuracy") in rows
    pushed = {p.name for p in remote_of(repo).rglob("*") if p.is_file()}
    assert pushed and pushed <= {p.name for p in (repo / ".dvc" / "cache").rglob("*") if p.is_file()}
    status = subprocess.run(["dvc", "status", "--cloud", "--json"], cwd=repo, capture_output=True, text=True)
    assert json.loads(status.stdout) == {}, "the retraining run left outputs that are not on the remote"
