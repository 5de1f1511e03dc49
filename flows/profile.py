"""Profiles and presets: a named overlay of params.yaml, run as a DVC experiment of the same pipeline.

profiles/<name>.yaml holds only what differs from params.yaml: the `real` profile points the downloads at
the real datasets and sizes the training for them; a seed preset brings its own hub model and experiments.
Groups listed under the overlay's `replace:` take the overlay's entries instead of params.yaml's (a preset
runs its experiments, not the default ones); every other group is merged key by key, and a `null` value
removes a key. The same stages and the same DVC cache run it, so whatever is unchanged is not recomputed.

    python -m flows.profile real                       # merge into params.yaml, then `dvc exp run`
    python -m flows.profile real --only mrpc-head      # one of its experiments (the cache keeps the rest;
                                                       # the report then covers that one only)
    python -m flows.profile real --write               # only write params.yaml; run `dvc repro` yourself

Back to the default afterwards: `git checkout params.yaml dvc.lock && dvc checkout`.
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
PER_EXPERIMENT = ("experiments", "tokenize", "train", "merge", "predict", "score")


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply(params: dict[str, Any], overlay: dict[str, Any], only: list[str] | None = None) -> dict[str, Any]:
    overlay = dict(overlay)
    replaced = overlay.pop("replace", []) or []
    unknown = [group for group in replaced if group not in params and group not in overlay]
    if unknown:
        raise SystemExit(f"error: profile replaces unknown groups {unknown}")
    merged = merge({k: v for k, v in params.items() if k not in replaced}, overlay)
    if only:
        missing = sorted(set(only) - set(merged.get("experiments", {})))
        if missing:
            raise SystemExit(f"error: --only names experiments the profile does not have: {missing} "
                             f"(it has: {', '.join(merged.get('experiments', {}))})")
        for group in PER_EXPERIMENT:  # a stage exists only for the items of its group
            merged[group] = {name: entry for name, entry in (merged.get(group) or {}).items() if name in only}
        # and only the models and datasets those experiments use are fetched and converted
        models = {entry["model"] for entry in merged["experiments"].values()}
        datasets = {entry["dataset"] for entry in merged["experiments"].values()}
        merged["fetch_model"] = {k: v for k, v in merged.get("fetch_model", {}).items() if k in models}
        for group in ("download", "convert"):
            merged[group] = {k: v for k, v in merged.get(group, {}).items() if k in datasets}
    return merged


def load_profile(name: str) -> dict[str, Any]:
    path = PROFILES / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.yaml")))
        raise SystemExit(f"error: no profile '{name}' ({path} not found; known: {known})")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="a file of profiles/ without .yaml: real, or a seed preset")
    parser.add_argument("--only", nargs="+", metavar="EXPERIMENT", help="run only these experiments of it")
    parser.add_argument("--write", action="store_true", help="write params.yaml and stop (no dvc exp run)")
    args = parser.parse_args()
    params_file = Path("params.yaml")
    params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    merged = apply(params, load_profile(args.name), args.only)
    params_file.write_text(yaml.safe_dump(merged, sort_keys=False, allow_unicode=True, width=110),
                           encoding="utf-8")
    print(f"params.yaml now holds profile '{args.name}'" + (f" ({', '.join(args.only)})" if args.only else ""))
    if args.write:
        return
    result = subprocess.run(["dvc", "exp", "run", "--message", f"profile {args.name}"])
    print("Back to the default: git checkout params.yaml dvc.lock && dvc checkout")
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
