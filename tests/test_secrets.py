"""A hub token set in the environment goes where it is for and nowhere else: the whole pipeline runs through
the Prefect flow with HF_TOKEN set and its base model fetched from a hub (our own, on localhost, through the
real huggingface_hub client), which receives the token with every request; and the token is in no file the
run writes (outputs, reports, model cards, dvc.lock, DVC's and git's own folders), in no line the flow, DVC
or a stage printed, and nowhere in Prefect: not in its logs or artifacts read back through the API, not in
the server's database or log."""
from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from tests.conftest import drain_prefect_workers
from tests.hub_server import serve_hub
from tests.test_faults import with_merge
from tests.test_flow import task_runs
from tests.test_resume import make_repo
from tests.workspace import edit

REVISION = "5" * 40


def files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(path) for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_hub_token_appears_in_no_file_log_or_prefect_record(prefect_api, tmp_path, monkeypatch, capfd, caplog):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    from flows.pipeline import pipeline

    caplog.set_level(logging.DEBUG)
    token = f"hf_{secrets.token_hex(16)}"
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.setenv(name, token)
    root = with_merge(make_repo(tmp_path / "repo"))
    model = {path.name: path.read_bytes() for path in (root / "tiny-llama").iterdir()}
    edit(root / "params.yaml", "models.tiny", {"source": "hub", "repo_id": "tunepipe-test/tiny-llama",
                                               "revision": REVISION})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with serve_hub({("model", "tunepipe-test/tiny-llama"): model}, REVISION) as (url, hub):
        monkeypatch.setenv("HF_ENDPOINT", url)
        state = pipeline(repo=str(root), return_state=True)
    assert state.is_completed(), state
    # the fetch read the token and sent it, to the hub only
    fetched = [request for request in hub.requests if "/resolve/" in request]
    assert fetched and set(hub.authorizations[-len(fetched):]) == {f"Bearer {token}"}
    assert (root / "models/base/tiny/model.safetensors").read_bytes() == model["model.safetensors"]
    assert len(task_runs(state)) >= 10  # every stage ran, model card and merged model included
    assert (root / "models/merged/toy/README.md").exists()
    drain_prefect_workers()

    captured = capfd.readouterr()
    printed = captured.out + captured.err + caplog.text  # what the process printed and what it logged
    assert "Running stage 'train@toy'" in printed  # the stages' own output reached the log
    assert token not in printed
    assert files_holding(root, token.encode()) == []
    flow_run_ids = [state.state_details.flow_run_id]
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids)))
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids)))
    assert any("Running stage 'merge@toy'" in log.message for log in logs)  # Prefect has the stages' logs
    assert not [log.message for log in logs if token in log.message]
    assert found and not [a.key for a in found if token in str(a.data)]
    prefect_home = Path(os.environ["PREFECT_HOME"])
    assert files_holding(prefect_home, token.encode()) == []  # the server's database and log
