"""Scheduled retraining that ships: pull the team's DVC cache, re-fetch the sources that follow a moving target,
run the pipeline stage by stage, push what is new, and publish what changed since the previous run.

Sources pinned to a sha256 or a hub commit stay as they are (DVC already knows their bytes); a download with
`follow: true` (a republished URL, a hub branch) is re-run every time, and only if its bytes changed does
anything downstream go stale. The schedule lives in params.yaml `retrain` (cron, timezone, work pool).

    python -m flows.retrain run                  # once, now
    python -m flows.retrain serve                # register the scheduled deployment and run it from this process
    python -m flows.retrain deploy --pool gpu    # register it on a work pool: a worker on the GPU machine runs it
                                                 # (prefect worker start --pool gpu), the server can be elsewhere
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.schedules import Cron

from flows.artifacts import publish_metrics_diff
from flows.dvc_cli import StageFailed, dvc, read_params
from flows.pipeline import pipeline, stage_graph

DEFAULTS = {"cron": "0 3 * * 1", "timezone": "UTC", "work_pool": None, "deployment": "scheduled-retrain",
            "compare_to": "HEAD", "push_merged": True}


def retrain_settings(params: dict[str, Any]) -> dict[str, Any]:
    return {**DEFAULTS, **(params.get("retrain") or {})}


def retrain_params(repo: str) -> dict[str, Any]:
    return retrain_settings(read_params(repo))


def followed_sources(repo: str, graph: dict[str, list[str]], profile: str = "") -> list[str]:
    """The download stages whose source is marked `follow: true` (params.yaml datasets.<name>, or an
    experiment's own dataset)."""
    import os

    from tunepipe.sources import data_params

    here = os.getcwd()
    os.chdir(Path(repo) / profile)  # the stages read a profile's files from its folder
    try:
        return [stage for stage in graph if stage.rpartition(":")[2].startswith("download@")
                and data_params(stage.rpartition(":")[2].split("@", 1)[1])[0].get("follow")]
    finally:
        os.chdir(here)


@task(cache_policy=NO_CACHE)
def pull_cache(repo: str) -> str:
    """Fetch what the team already built, so those stages are skipped; what the remote lacks gets built."""
    logger = get_run_logger()
    try:
        dvc(repo, "pull", "--allow-missing")
        return "pulled"
    except StageFailed as err:  # no remote yet, or one that cannot be reached: build locally, say so
        logger.warning("dvc pull: %s; stages whose outputs are missing will run", err)
        return "not pulled"


def push_targets(repo: str, push_merged: bool, profile: str = "") -> list[str]:
    """Every stage's outputs, or all but the merge stages' (a merged model is rebuilt from its adapter in
    minutes, and is as large as the base model); [] means everything."""
    if push_merged:
        return []
    return [stage for stage in stage_graph(repo, profile) if not stage.rpartition(":")[2].startswith("merge@")]


@task(cache_policy=NO_CACHE)
def push_cache(repo: str, push_merged: bool, profile: str = "") -> None:
    dvc(repo, "push", *push_targets(repo, push_merged, profile))


@flow(name="tunepipe-retrain", log_prints=True)
def retrain(repo: str = ".", push: bool = True, retries: int = 2, retry_delay_seconds: float = 30,
            profile: str = "") -> dict:
    """One retraining run; its artifacts: the scores, the report, and `dvc metrics diff` against the previous run."""
    repo = str(Path(repo).resolve())
    pulled = pull_cache(repo)
    settings = retrain_settings(read_params(repo))
    followed = followed_sources(repo, stage_graph(repo, profile), profile)  # re-fetched: DVC cannot see them move
    summary = pipeline(repo=repo, retries=retries, retry_delay_seconds=retry_delay_seconds, force=followed,
                       profile=profile)
    if push:
        push_cache(repo, settings["push_merged"], profile)
    diff = publish_metrics_diff(repo, settings["compare_to"])
    changed = [row for row in diff if row["change"] not in (None, 0)]
    print(f"cache {pulled}; re-fetched {followed or 'no followed source'}; {len(summary['ran'])} stages ran; "
          f"{len(changed)} metrics changed; {'pushed' if push else 'not pushed'}")
    return {"stages": summary, "metrics_diff": diff}


def deploy(repo: str, work_pool: str, settings: dict[str, Any]) -> str:
    """Register the deployment on a work pool; returns its id. The flow's code is read from `repo` by the worker."""
    deployment_id = retrain.from_source(source=repo, entrypoint="flows/retrain.py:retrain").deploy(
        name=settings["deployment"], work_pool_name=work_pool,
        schedules=[Cron(settings["cron"], timezone=settings["timezone"])],
        parameters={"repo": repo}, build=False, push=False, print_next_steps=False)
    return str(deployment_id)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.retrain", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="retrain once, now")
    run.add_argument("--no-push", action="store_true", help="leave the DVC remote as it is")
    commands.add_parser("serve", help="register the scheduled deployment and serve it from this process")
    deploy_cmd = commands.add_parser("deploy", help="register the scheduled deployment on a work pool")
    deploy_cmd.add_argument("--pool", help="work pool name (default: params.yaml retrain.work_pool)")
    args = parser.parse_args()
    repo = str(Path.cwd())
    settings = retrain_params(repo)
    if args.command == "run":
        retrain(repo, push=not args.no_push)
    elif args.command == "serve":
        retrain.serve(name=settings["deployment"], schedules=[Cron(settings["cron"], timezone=settings["timezone"])],
                      parameters={"repo": repo})
    else:
        pool = args.pool or settings["work_pool"]
        if not pool:
            sys.exit("error: no work pool: pass --pool or set params.yaml retrain.work_pool")
        print(f"deployment {deploy(repo, pool, settings)} on work pool '{pool}': start a worker there with "
              f"`prefect worker start --pool {pool}`")


if __name__ == "__main__":
    main()
