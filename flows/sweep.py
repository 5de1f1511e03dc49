"""A sweep: queue one `dvc exp run -S ...` per point of a small grid, run the queue, and publish the comparison
that `dvc exp show` gives afterwards. Each variant is a DVC experiment, so the cache skips every stage a
variant does not change, and `dvc exp show`, `dvc exp apply` and `dvc exp push` work on them as usual.

    python -m flows.sweep experiments/dialogsum-lora.yaml:train.learning_rate=0.0001,0.0003 \
                          experiments/dialogsum-lora.yaml:train.lora.r=4,8
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.dvc_cli import dvc


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the order given."""
    if not grid or any(not values for values in grid.values()):
        raise ValueError(f"a sweep needs at least one value per parameter, got {grid}")
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def flatten(prefix: str, value: Any, into: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key, inner in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), inner, into)
    else:
        into[prefix] = value
    return into


def experiment_rows(shown: list[dict], names: list[str], varied: list[str]) -> list[dict]:
    """One row per named experiment of `dvc exp show --json`: the varied params, then every metric."""
    found: dict[str, dict] = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                if rev.get("name") in names:
                    found[rev["name"]] = rev.get("data") or {}
    rows = []
    for name in names:
        data = found.get(name, {})
        params: dict[str, Any] = {}  # "file:key" (how -S names a key of a file other than params.yaml) and "key"
        for file, content in (data.get("params") or {}).items():
            for key, value in flatten("", content.get("data") or {}, {}).items():
                params[f"{file}:{key}"] = value
                if file == "params.yaml":
                    params[key] = value
        row: dict[str, Any] = {"experiment": name, **{key: params.get(key) for key in varied}}
        for path, content in sorted((data.get("metrics") or {}).items()):
            stem = Path(path).stem if "reports/metrics/" in path else path
            for key, value in flatten("", content.get("data") or {}, {}).items():
                row[f"{stem}: {key}"] = value
        rows.append(row)
    return rows


@task(cache_policy=NO_CACHE, task_run_name="queue {name}")
def queue_variant(repo: str, name: str, point: dict[str, Any]) -> None:
    settings = [arg for key, value in point.items() for arg in ("-S", f"{key}={json.dumps(value)}")]
    dvc(repo, "exp", "run", "--queue", "--name", name, *settings)


@task(cache_policy=NO_CACHE)
def run_queue(repo: str, jobs: int) -> None:
    dvc(repo, "exp", "run", "--run-all", "--jobs", str(jobs))


@flow(name="tunepipe-sweep", log_prints=True)
def sweep(grid: dict[str, list[Any]], repo: str = ".", prefix: str | None = None, jobs: int = 1) -> list[dict]:
    """Queue and run one DVC experiment per grid point; the artifact compares them as `dvc exp show` does."""
    repo = str(Path(repo).resolve())
    prefix = prefix or time.strftime("sweep-%Y%m%d-%H%M%S")
    points = grid_points(grid)
    names = [f"{prefix}-{index}" for index in range(1, len(points) + 1)]
    for name, point in zip(names, points):
        queue_variant(repo, name, point)
    run_queue(repo, jobs)
    rows = experiment_rows(json.loads(dvc(repo, "exp", "show", "--json").stdout or "[]"), names, list(grid))
    create_table_artifact(key="sweep", table=rows, description=f"`dvc exp show` of the {len(rows)} variants of "
                                                               f"{', '.join(grid)}")
    print(f"{len(rows)} experiments: {', '.join(names)}; compare them with `dvc exp show`")
    return rows


def parse_setting(text: str) -> tuple[str, list[Any]]:
    """`key=v1,v2` -> (key, [v1, v2]), each value read as YAML (numbers stay numbers)."""
    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise argparse.ArgumentTypeError(f"expected key=value1,value2, got '{text}'")
    return key, [yaml.safe_load(value) for value in values.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="+", type=parse_setting, metavar="KEY=V1,V2")
    parser.add_argument("--prefix", help="experiment names: <prefix>-1, <prefix>-2, ... (default: sweep-<time>)")
    parser.add_argument("--jobs", type=int, default=1, help="experiments run at once (default 1: 2 CPU cores)")
    args = parser.parse_args()
    sweep(dict(args.settings), str(Path.cwd()), args.prefix, args.jobs)


if __name__ == "__main__":
    main()
