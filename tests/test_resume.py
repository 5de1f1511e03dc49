"""A train stage killed with SIGKILL resumes from its last checkpoint under `dvc repro` and ends with the
same adapter bytes as an uninterrupted run; checkpoints made from other params are refused.

The pipeline is the project's own stages, planned into a dvc.yaml, on a tiny Llama (a config, random weights) and the
sample DialogSum rows, in a real git + DVC repository.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.tiny_models import write_tiny_model
from tests.workspace import edit, write_yaml

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
       "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
       "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}
STEPS, EVERY = 40, 5


def make_repo(root: Path) -> Path:
    """A project of one experiment (`toy`, LoRA on a tiny Llama over the sample DialogSum rows): the
    project's stages, metrics and defaults, its own params.yaml and experiment file, dvc.yaml from the plan."""
    root.mkdir()
    shutil.copy(REPO / ".dvcignore", root / ".dvcignore")
    for folder in ("stages", "tunepipe", "metrics", "defaults"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "data/samples/dialogsum", root / "samples/dialogsum")
    write_tiny_model("llama", root / "tiny-llama")
    write_yaml(root / "params.yaml", {
        "models": {"tiny": {"path": "tiny-llama"}},
        "datasets": {"dialogsum": {"path": "samples/dialogsum", "format": "dialogsum", "max_reject_rate": 0.01}},
        "report": {"profile": "test", "note": "test"}})
    write_yaml(root / "experiments/toy.yaml", {
        "dataset": "dialogsum", "model": "tiny", "kind": "causal_lm", "method": "lora", "metric": "rouge_any",
        "seed": 3,
        "train": {"lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]},
                  "learning_rate": 0.001, "max_steps": STEPS, "batch_size": 2, "threads": 1,
                  "checkpoint_steps": EVERY, "eval_steps": 10, "max_eval_rows": 4},
        "predict": {"batch_size": 2, "max_new_tokens": 2, "threads": 1}})
    plan(root)
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                    ["git", "commit", "-qm", "pipeline under test"]):
        subprocess.run(command, cwd=root, env=ENV, check=True)
    return root


def plan(root: Path) -> None:
    """dvc.yaml from the experiment files, as `make plan` writes it."""
    subprocess.run([sys.executable, "-m", "stages.plan"], cwd=root, env=ENV, check=True, capture_output=True)


def repro(root: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["dvc", "repro", "train@toy"], cwd=root, env=ENV, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def adapter_bytes(root: Path) -> dict[str, bytes]:
    """The adapter, and what the run reports of itself: training totals and the DVCLive curves."""
    files = sorted((root / "models/trained/toy").iterdir()) + [root / "reports/train/toy/summary.json"]
    files += sorted(p for p in (root / "reports/train/toy/live").rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def kill_after_checkpoint(root: Path, step: int) -> None:
    """Start `dvc repro`, wait until the train stage has saved checkpoint-<step>, then SIGKILL everything."""
    process = subprocess.Popen(["dvc", "repro", "train@toy"], cwd=root, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    state = root / "checkpoints/toy" / f"checkpoint-{step}" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not state.exists():
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the stage and DVC with it, mid-run
    process.wait()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, bytes]:
    root = make_repo(tmp_path_factory.mktemp("whole") / "repo")
    repro(root)
    assert not (root / "checkpoints/toy").exists()  # removed once the result is saved
    return adapter_bytes(root)


def test_sigkilled_training_resumes_to_identical_adapter_bytes(uninterrupted, tmp_path):
    root = make_repo(tmp_path / "repo")
    kill_after_checkpoint(root, 2 * EVERY)
    assert not (root / "models/trained/toy").exists()  # nothing that looks done
    result = repro(root)
    assert f"resuming from checkpoints/toy/checkpoint-{2 * EVERY}" in result.stdout
    # it did resume: the second process trained only the steps after the checkpoint (a restart from step 0,
    # seeded as it is, would end with the same bytes too)
    speed = json.loads((root / "reports/speed/toy.json").read_text())
    summary = json.loads((root / "reports/train/toy/summary.json").read_text())
    assert speed["resumed"] and speed["tokens_per_second"] * speed["seconds"] < 0.85 * summary["real_tokens"]
    assert adapter_bytes(root) == uninterrupted
    assert not (root / "checkpoints/toy").exists()
    status = subprocess.run(["dvc", "status", "train@toy"], cwd=root, env=ENV, capture_output=True, text=True)
    assert "up to date" in status.stdout


def test_checkpoints_from_other_params_are_refused(tmp_path):
    root = make_repo(tmp_path / "repo")
    kill_after_checkpoint(root, EVERY)
    edit(root / "experiments/toy.yaml", "train.learning_rate", 0.002)
    result = repro(root, check=False)
    assert result.returncode != 0
    assert ("error: experiments/toy.yaml train: checkpoints/toy holds checkpoints made from other params; delete "
            "checkpoints/toy to start over") in result.stderr + result.stdout
    assert (root / "checkpoints/toy" / f"checkpoint-{EVERY}").exists()  # refused, not overwritten
