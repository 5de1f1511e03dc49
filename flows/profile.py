"""Profiles: named sets of experiments that live side by side, each in its own folder with its own lock.

A profile is a folder laid out like the repository root: params.yaml (its models, datasets and report),
experiments/*.yaml, and the dvc.yaml and dvc.lock that `stages.plan` writes and DVC keeps. `default` is the
root itself; profiles/real runs the embedded models on the real datasets; profiles/seed-* are the seeds'
setups with their hub models. Nothing is rewritten to switch between them: each one's outputs stay in its
folder, the DVC cache is shared (what two profiles compute alike is computed once), and each committed
lock lets a teammate `dvc pull` that profile's results.

    python -m flows.profile real                       # plan profiles/real, then dvc repro it
    python -m flows.profile real --only mrpc-head      # one experiment and what it needs (no report)
    python -m flows.profile seed-phi2-dialogsum --plan # only write its dvc.yaml
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "profiles"


def folder_of(name: str) -> str:
    """'' for the default profile (the root), else the profile's folder relative to the root."""
    if name == "default":
        return ""
    if not (PROFILES / name / "experiments").is_dir():
        known = ", ".join(["default", *sorted(p.name for p in PROFILES.iterdir() if (p / "experiments").is_dir())])
        raise SystemExit(f"error: no profile '{name}' (profiles/{name}/experiments/ not found; known: {known})")
    return f"profiles/{name}"


def targets(folder: str, only: list[str] | None) -> list[str]:
    dvcfile = f"{folder}/dvc.yaml" if folder else "dvc.yaml"
    if not only:
        return [dvcfile]
    experiments = Path(ROOT / folder / "experiments") if folder else ROOT / "experiments"
    missing = [name for name in only if not (experiments / f"{name}.yaml").exists()]
    if missing:
        raise SystemExit(f"error: --only names experiments the profile does not have: {missing}")
    # score needs everything up to the predictions; merge is a leaf of its own, so it is named where it is planned
    merged = yaml.safe_load((ROOT / dvcfile).read_text())["stages"].get("merge", {}).get("foreach", {})
    return [f"{dvcfile}:{stage}@{name}" for name in only for stage in ("score", "merge")
            if stage == "score" or name in merged]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="default, or a folder of profiles/: real, or a seed preset")
    parser.add_argument("--only", nargs="+", metavar="EXPERIMENT", help="run only these experiments of it")
    parser.add_argument("--plan", action="store_true", help="write the profile's dvc.yaml and stop")
    args = parser.parse_args()
    folder = folder_of(args.name)
    plan = [sys.executable, "-m", "stages.plan", *(["--profile", folder] if folder else [])]
    if subprocess.run(plan, cwd=ROOT).returncode != 0:
        sys.exit(2)
    if args.plan:
        return
    sys.exit(subprocess.run(["dvc", "repro", *targets(folder, args.only)], cwd=ROOT).returncode)


if __name__ == "__main__":
    main()
