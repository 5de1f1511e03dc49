"""The dvc command line, as the flows call it (DVC has no public Python API to run a pipeline), and the
repository's params.yaml as the flows read it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def read_params(repo: str | Path) -> dict[str, Any]:
    """params.yaml of `repo` ({} when there is none)."""
    path = Path(repo) / "params.yaml"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}


def command_env() -> dict[str, str]:
    """This interpreter's bin folder first on PATH: `dvc` and the stages' `python` are the project's own, also
    when a Prefect worker started the flow from a shell without the virtual environment."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


class StageFailed(RuntimeError):
    """A stage failed in a way a retry cannot fix (bad input, bad params, a bug)."""


class TransientStageFailure(StageFailed):
    """A stage failed in a way that may pass on a later try (it exited with TRANSIENT_EXIT)."""


def dvc(repo: str, *args: str) -> subprocess.CompletedProcess:
    """Run a dvc command in `repo`; a failure raises with DVC's own ERROR lines."""
    result = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True, env=command_env())
    if result.returncode != 0:
        raise StageFailed(f"dvc {' '.join(args)} failed ({result.returncode}): {error_lines(result)}")
    return result


def error_lines(result: subprocess.CompletedProcess) -> str:
    """DVC's 'ERROR: ...' lines and the stage's own 'error: ...' line, else the end of stderr."""
    errors = [line for line in (result.stderr + result.stdout).splitlines() if line.lower().startswith("error")]
    return " ".join(errors) or result.stderr.strip()[-500:]
