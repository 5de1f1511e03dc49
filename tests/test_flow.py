"""The Prefect flows over small real DVC repositories and a real Prefect server: one task per stage in DVC's
order, retries only for transient failures, dependents of a failure not run, sweeps, API auth."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
BOOKKEEPING = ("verify_cache", "publish_")  # the flow's own tasks around the stages
WRITE = """import json, sys, yaml
params = yaml.safe_load(open("params.yaml"))["count"]
json.dump({"n": params["n"], "square": params["n"] ** 2}, open(sys.argv[1], "w"))
"""
# c depends on a (its output) and b; b and d stand alone; dvc.yaml lists c first
STAGES = """stages:
  c:
    cmd: python write.py c.json
    deps: [write.py, a.json, b.json]
    outs: [c.json]
  a:
    cmd: python write.py a.json
    deps: [write.py]
    params: [count.n]
    outs: [a.json]
  b:
    cmd: python write.py b.json
    deps: [write.py]
    outs: [b.json]
  d:
    cmd: python write.py metrics.json
    deps: [write.py]
    params: [count.n]
    metrics:
      - metrics.json: {cache: false}
"""
# exits 75 (transient) on its first call, then succeeds; or always exits 2 with one error line (bad input)
FLAKY = """import pathlib, sys
tries = pathlib.Path("tries.txt")
count = int(tries.read_text()) + 1 if tries.exists() else 1
tries.write_text(str(count))
if sys.argv[1] == "bad":
    print("error: data/input.csv line 3: no label column", file=sys.stderr)
    sys.exit(2)
if count == 1:
    print("error: cannot download https://example.org/x (TimeoutError)", file=sys.stderr)
    sys.exit(75)
open("a.json", "w").write("{}")
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture
def tiny_repo(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    git(tmp_path, "init", "-q")
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("count:\n  n: 3\n")
    (tmp_path / "dvc.yaml").write_text(STAGES)
    (tmp_path / "write.py").write_text(WRITE)
    (tmp_path / "flaky.py").write_text(FLAKY)
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "tiny")
    return tmp_path


def task_runs(flow_state) -> dict[str, object]:
    """The flow run's task runs by name, read back through the Prefect API once each has its final state: task
    states reach the server as events, which it records a moment after the flow has ended."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from tests.conftest import drain_prefect_workers

    drain_prefect_workers()
    flow_run_id = flow_state.state_details.flow_run_id
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if all(run.state and run.state.is_final() for run in runs) or time.monotonic() > deadline:
                return {run.name: run for run in runs}
            time.sleep(0.5)


def artifacts(flow_state, key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_state.state_details.flow_run_id])))


def test_stage_order_is_dvc_s_graph_and_targets_bring_only_what_they_need(tiny_repo):
    from flows.pipeline import stage_graph, stage_order

    graph = stage_graph(str(tiny_repo))
    assert graph == {"c": ["a", "b"], "a": [], "b": [], "d": []}
    assert stage_order(graph) == ["a", "b", "c", "d"]  # c waits for a and b although dvc.yaml lists it first
    assert stage_order(graph, ["c"]) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="no such stage: e"):
        stage_order(graph, ["e"])


def test_one_task_per_stage_then_every_stage_skipped(prefect_api, tiny_repo):
    from flows.pipeline import pipeline

    first = pipeline(repo=str(tiny_repo), return_state=True)
    assert first.result() == {"ran": ["a", "b", "c", "d"], "skipped": [], "failed": [], "not run": []}
    runs = task_runs(first)
    assert {name: run.state.name for name, run in runs.items() if not name.startswith(BOOKKEEPING)} == {
        "a": "Completed", "b": "Completed", "c": "Completed", "d": "Completed"}
    assert runs["a"].end_time <= runs["c"].start_time and runs["b"].end_time <= runs["c"].start_time

    second = pipeline(repo=str(tiny_repo), return_state=True)
    assert second.result()["skipped"] == ["a", "b", "c", "d"]
    assert {run.state.name for name, run in task_runs(second).items() if not name.startswith(BOOKKEEPING)} == {"Skipped"}

    (tiny_repo / "params.yaml").write_text("count:\n  n: 4\n")  # a, d and (through a.json) c are stale; b is not
    third = pipeline(repo=str(tiny_repo), return_state=True).result()
    assert (third["ran"], third["skipped"]) == (["a", "c", "d"], ["b"])
    assert json.loads((tiny_repo / "metrics.json").read_text()) == {"n": 4, "square": 16}


def test_a_transient_failure_is_retried_and_then_passes(prefect_api, tiny_repo):
    from flows.pipeline import pipeline

    stages = (tiny_repo / "dvc.yaml").read_text().replace("cmd: python write.py a.json", "cmd: python flaky.py ok")
    (tiny_repo / "dvc.yaml").write_text(stages)
    state = pipeline(["a"], repo=str(tiny_repo), retry_delay_seconds=0, return_state=True)
    assert state.is_completed() and state.result()["ran"] == ["a"]
    assert task_runs(state)["a"].run_count == 2  # the timeout, then the success
    assert (tiny_repo / "tries.txt").read_text() == "2"


def test_bad_input_fails_at_once_with_the_stage_s_line_and_its_dependents_do_not_run(prefect_api, tiny_repo):
    from flows.pipeline import pipeline

    stages = (tiny_repo / "dvc.yaml").read_text().replace("cmd: python write.py a.json", "cmd: python flaky.py bad")
    (tiny_repo / "dvc.yaml").write_text(stages)
    state = pipeline(repo=str(tiny_repo), retry_delay_seconds=0, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"1 stage\(s\) failed, 1 not run: a failed \(\d+\): "
                                        r"error: data/input.csv line 3: no label column"):
        state.result()
    runs = task_runs(state)
    assert (runs["a"].state.name, runs["a"].run_count) == ("Failed", 1)  # no retry for bad input
    assert runs["c"].state.name == "NotRun" and "a failed" in runs["c"].state.message
    assert (runs["b"].state.name, runs["d"].state.name) == ("Completed", "Completed")  # independent: they ran
    assert not (tiny_repo / "c.json").exists()


def test_sweep_runs_one_experiment_per_grid_point_and_publishes_the_comparison(prefect_api, tiny_repo):
    from flows.sweep import sweep

    subprocess.run(["dvc", "repro", "-q"], cwd=tiny_repo, check=True)
    git(tiny_repo, "add", "-A")
    git(tiny_repo, "commit", "-qm", "baseline run")
    state = sweep({"count.n": [5, 7]}, repo=str(tiny_repo), prefix="grid", return_state=True)
    rows = state.result()
    assert [(row["experiment"], row["count.n"], row["metrics.json: square"]) for row in rows] == [
        ("grid-1", 5, 25), ("grid-2", 7, 49)]
    shown = subprocess.run(["dvc", "exp", "show", "--csv"], cwd=tiny_repo, capture_output=True, text=True).stdout
    assert "grid-1" in shown and "grid-2" in shown
    [table] = artifacts(state, "sweep")
    assert "grid-2" in json.dumps(table.data)


def test_the_server_refuses_requests_without_the_team_s_credentials(prefect_api):
    url, _ = prefect_api
    request = urllib.request.Request(f"{url}/flows/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    wrong = urllib.request.Request(request.full_url, data=b"{}", method="POST", headers={
        "Content-Type": "application/json", "Authorization": "Basic dGVhbTp3cm9uZw=="})  # team:wrong
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(wrong, timeout=10)
    assert refused.value.code == 401

    from prefect import flow

    @flow
    def hello() -> str:
        return "ok"

    assert hello() == "ok"  # the same server, with PREFECT_API_AUTH_STRING from the environment


FOLLOW_STAGES = """stages:
  download:
    foreach: ${datasets}
    do:
      cmd: python -m stages.download ${key}
      deps: ["${item.path}"]
      params: ["datasets.${key}"]
      outs: ["data/raw/${key}"]
  count:
    cmd: python -c "import pathlib; print(sorted((p.name, len(p.read_text().splitlines())) for p in pathlib.Path('data/raw').rglob('*.csv')))" > counts.txt
    deps: [data/raw]
    outs: [counts.txt]
"""


def test_retraining_refetches_followed_sources_and_leaves_pinned_ones(prefect_api, tiny_repo, monkeypatch):
    """A URL that republishes its file in place is invisible to `dvc status`; the retraining flow re-fetches
    it (follow: true), and only changed bytes make anything downstream stale. A sha256-pinned URL is left alone."""
    import hashlib

    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the download stage's entry point: stages/ is not installed

    from flows.retrain import retrain

    pinned, moving = tiny_repo / "served" / "pinned.csv", tiny_repo / "served" / "moving.csv"
    pinned.parent.mkdir()
    pinned.write_text("a\nb\n")
    moving.write_text("x\n")
    (tiny_repo / "dvc.yaml").write_text(FOLLOW_STAGES)
    (tiny_repo / "params.yaml").write_text(yaml_dump({"datasets": {
        "pinned": {"source": "url", "url": pinned.as_uri(), "sha256": hashlib.sha256(b"a\nb\n").hexdigest(),
                   "path": "write.py"},
        "moving": {"source": "url", "url": moving.as_uri(), "follow": True, "path": "write.py"}}}))

    def stage_states() -> dict[str, str]:
        state = retrain(str(tiny_repo), push=False, return_state=True)
        assert state.is_completed(), state
        summary = state.result()["stages"]
        return {stage: kind for kind, stages in summary.items() for stage in stages}

    assert set(stage_states().values()) == {"ran"}
    moving.write_text("x\ny\n")  # republished in place
    assert subprocess.run(["dvc", "status", "--json"], cwd=tiny_repo, capture_output=True, text=True).stdout.strip() == "{}"
    assert stage_states() == {"download@pinned": "skipped", "download@moving": "ran", "count": "ran"}
    assert "('moving.csv', 2)" in (tiny_repo / "counts.txt").read_text()
    # fetched again, same bytes: nothing downstream runs
    assert stage_states() == {"download@pinned": "skipped", "download@moving": "ran", "count": "skipped"}


def yaml_dump(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def test_two_flow_runs_at_once_in_one_workspace_both_finish_and_corrupt_nothing(prefect_api, tiny_repo):
    """Each stage task waits for DVC's repository lock (--wait-for-lock), so two runs interleave stage by stage:
    whichever comes second finds each stage done by the first and skips it."""
    slow = (tiny_repo / "dvc.yaml").read_text().replace(
        "cmd: python write.py a.json", "cmd: python -c \"import time; time.sleep(3)\" && python write.py a.json")
    (tiny_repo / "dvc.yaml").write_text(slow)
    command = [sys.executable, "-m", "flows.pipeline", "run", "--retries", "0"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs = [subprocess.Popen(command, cwd=tiny_repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    ran = [set(re.findall(r"Task run '(\w)' - Finished in state Completed\('ran'\)", out)) for out in outputs]
    assert ran[0] | ran[1] == {"a", "b", "c", "d"} and not ran[0] & ran[1]  # each stage ran once, in one run
    assert json.loads((tiny_repo / "c.json").read_text()) == {"n": 3, "square": 9}
    status = subprocess.run(["dvc", "status", "--json"], cwd=tiny_repo, capture_output=True, text=True)
    assert json.loads(status.stdout) == {}
