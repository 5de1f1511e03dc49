"""plan: experiments/*.yaml (+ params.yaml's datasets and models) -> dvc.yaml, the pipeline DVC runs.

    python -m stages.plan                           # write dvc.yaml for the default profile (the root)
    python -m stages.plan --profile profiles/real   # the same for a profile folder
    python -m stages.plan --check                   # fail, saying what to run, when dvc.yaml is out of date

tunepipe/plan.py says what goes in it and why. The `plan` stage inside dvc.yaml runs this check whenever an
experiment file or params.yaml changes, so a new experiment file is never silently left out of `dvc repro`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from tunepipe import stage
from tunepipe.errors import StageError
from tunepipe.files import atomic_file
from tunepipe.plan import plan, render
from tunepipe.settings import experiment_names
from tunepipe.stage import run_stage


def main(argv: list[str]) -> None:
    check = "--check" in argv
    unknown = [arg for arg in argv if arg != "--check"]
    if unknown:
        raise StageError(f"usage: python -m stages.plan [--check] [--profile FOLDER] (got {' '.join(unknown)})")
    prefix = stage.PROFILE
    text = render(plan(prefix))
    target = Path("dvc.yaml")
    where = f"{prefix}/dvc.yaml" if prefix else "dvc.yaml"
    if check:
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            rerun = "make plan" if not prefix else f"python -m stages.plan --profile {prefix}"
            raise StageError(f"{where} is out of date with {prefix + '/' if prefix else ''}experiments/ and "
                             f"params.yaml (an experiment added, removed, or its dataset, model, kind, method "
                             f"or metric changed): run `{rerun}`, then dvc repro")
        print(f"[plan] {where} is up to date ({len(experiment_names())} experiments)")
        return
    if target.exists() and target.read_text(encoding="utf-8") == text:
        print(f"[plan] {where}: unchanged")
        return
    with atomic_file(target) as handle:
        handle.write(text)
    print(f"[plan] {where}: {len(experiment_names())} experiments", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main, timed=False)  # a check, not work: it leaves no timing behind
