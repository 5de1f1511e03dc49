"""A train stage killed with SIGKILL resumes from its last checkpoint under `dvc repro` and ends with the
same adapter bytes as an uninterrupted run; checkpoints made from other params are refused.

The pipeline is the project's own dvc.yaml and stages on a tiny Llama (a config, random weights) and the
sample DialogSum rows, in a real git + DVC repository.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.tiny_models import write_tiny_model

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
       "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
       "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}
STEPS, EVERY = 40, 5


def make_repo(root: Path) -> Path:
    root.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    for folder in ("stages", "metrics"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "data/samples/dialogsum", root / "samples/dialogsum")
    write_tiny_model("llama", root / "tiny-llama")
    params = {
        "fetch_model": {"tiny": {"source": "local", "path": "tiny-llama"}},
        "download": {"dialogsum": {"source": "local", "path": "samples/dialogsum"}},
        "convert": {"dialogsum": {"format": "dialogsum", "max_reject_rate": 0.01}},
        "experiments": {"toy": {"dataset": "dialogsum", "model": "tiny", "kind": "causal_lm", "method": "lora",
                                "metric": "rouge_any", "seed": 3}},
        "tokenize": {"toy": {"max_length": 512}},
        "train": {"toy": {"lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]},
                          "learning_rate": 0.001, "epochs": 1, "max_steps": STEPS, "batch_size": 2, "threads": 1,
                          "checkpoint_steps": EVERY, "eval_steps": 10, "max_eval_rows": 4}},
        "merge": {}, "predict": {"toy": {"batch_size": 2, "max_new_tokens": 2}}, "score": {"toy": {}},
        "report": {"profile": "test", "note": "test", "dir": "reports"},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                    ["git", "commit", "-qm", "pipeline under test"]):
        subprocess.run(command, cwd=root, env=ENV, check=True)
    return root


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
    assert "resuming from checkpoints/toy/checkpoint-" in result.stdout
    assert adapter_bytes(root) == uninterrupted
    assert not (root / "checkpoints/toy").exists()
    status = subprocess.run(["dvc", "status", "train@toy"], cwd=root, env=ENV, capture_output=True, text=True)
    assert "up to date" in status.stdout


def test_checkpoints_from_other_params_are_refused(tmp_path):
    root = make_repo(tmp_path / "repo")
    kill_after_checkpoint(root, EVERY)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["toy"]["learning_rate"] = 0.002
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = repro(root, check=False)
    assert result.returncode != 0
    assert ("error: params.yaml train.toy: checkpoints/toy holds checkpoints made from other params; delete "
            "checkpoints/toy to start over") in result.stderr + result.stdout
    assert (root / "checkpoints/toy" / f"checkpoint-{EVERY}").exists()  # refused, not overwritten
