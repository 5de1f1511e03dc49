"""Prefect over DVC: one Prefect task per DVC stage, in the order DVC's own graph gives; DVC decides what is stale.

The flow first writes the profile's dvc.yaml from its experiment files (stages.plan), then asks DVC once,
with `dvc status`, which stages are stale. A stage that is up to date, and whose upstream stages all were,
is shown Skipped without starting anything; every other stage is its own task running
`dvc --wait-for-lock repro --single-item <stage@item>`, which DVC may still skip (an upstream stage that ran
can leave its outputs byte-identical). So the UI shows every stage with its own state, duration and log:
Completed (it ran), Skipped (up to date), Failed (with the stage's own error line) or NotRun (something it
depends on failed), and a run with nothing to do costs one `dvc status`, not one dvc process per stage.
Prefect's task cache is off: there is one cache, DVC's. Stages run one after another: every training and generation stage already uses all the threads it is
given, and DVC locks each running stage's outputs and dependencies, so a stage could only run beside
another that shares none of its files. Two flow runs may share a workspace: a stage task waits for DVC's
locks (the repository's, and the file locks of another dvc process running that stage), then finds the
stage done and skips it.

A stage that fails for a reason that may pass (exit status 75, EX_TEMPFAIL: a download timed out) is
retried with exponential backoff; any other failure (bad input, bad params) fails at once.

    python -m flows.pipeline run [TARGET ...]   # e.g. `run score@dialogsum-lora`: it and what it needs
    python -m flows.pipeline run --profile profiles/real   # a profile folder's pipeline
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # telemetry would try the network
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.states import Cancelled, Completed, State  # noqa: E402
from prefect.tasks import exponential_backoff  # noqa: E402

from flows.artifacts import publish_results  # noqa: E402
from flows.cache_check import verify_cache  # noqa: E402
from flows.dvc_cli import StageFailed, TransientStageFailure, command_env, dvc, error_lines  # noqa: E402
from tunepipe.errors import TRANSIENT_EXIT  # noqa: E402

BUSY = "is being blocked by"  # DVC's message when another dvc process holds a stage's outputs or dependencies
LOCK_POLL_SECONDS, LOCK_WAIT_SECONDS = 2.0, 24 * 3600.0
RAN = re.compile(r"^Running stage '([^']+)'", re.M)
NODE = re.compile(r'^"([^"]+)";$', re.M)
EDGE = re.compile(r'^"([^"]+)" -> "([^"]+)";$', re.M)


def dvcfile(profile: str = "") -> str:
    return f"{profile}/dvc.yaml" if profile else "dvc.yaml"


def stage_graph(repo: str, profile: str = "") -> dict[str, list[str]]:
    """Every stage of the profile's dvc.yaml (`stage@item` for foreach stages; another profile's as
    `<folder>/dvc.yaml:stage@item`) with the stages it depends on, as `dvc dag` reports them, in dvc.yaml's
    order."""
    dot = dvc(repo, "dag", "--dot").stdout
    upstream: dict[str, list[str]] = {name: [] for name in NODE.findall(dot)}
    for source, target in EDGE.findall(dot):
        upstream.setdefault(target, []).append(source)
        upstream.setdefault(source, [])
    mine = (lambda name: name.startswith(f"{profile}/dvc.yaml:")) if profile else (lambda name: ":" not in name)
    return {name: ups for name, ups in upstream.items() if mine(name)}


def stale_stages(repo: str, profile: str = "") -> set[str] | None:
    """The stages `dvc status` finds changed (deps, params, outs or the command), in one dvc process; None
    when another dvc process holds some stage's files (a second flow run in this workspace): then every stage
    goes through `dvc repro`, which waits for them."""
    result = subprocess.run(["dvc", "--wait-for-lock", "status", "--json", dvcfile(profile)], cwd=repo,
                            capture_output=True, text=True, env=command_env())
    if result.returncode != 0 and BUSY in result.stderr + result.stdout:
        return None
    if result.returncode != 0:
        raise StageFailed(f"dvc status failed ({result.returncode}): {error_lines(result)}")
    status = json.loads(result.stdout or "{}")
    prefix = f"{profile}/dvc.yaml:" if profile else ""
    return {name if name.startswith(prefix) or ":" in name else prefix + name for name in status}


def write_plan(repo: str, profile: str = "") -> None:
    """dvc.yaml from the profile's experiment files (a repository without experiments/ keeps its own)."""
    if not (Path(repo) / profile / "experiments").is_dir():
        return
    command = [sys.executable, "-m", "stages.plan", *(["--profile", profile] if profile else [])]
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True, env=command_env())
    if result.returncode != 0:
        raise StageFailed(f"plan failed: {error_lines(result)}")


def stage_order(graph: dict[str, list[str]], targets: list[str] | None = None) -> list[str]:
    """The targets (default: every stage) and everything they depend on, each after its dependencies; among
    stages that are ready at once, dvc.yaml's order."""
    wanted = set(graph)
    if targets:
        unknown = [t for t in targets if t not in graph]
        if unknown:
            raise ValueError(f"no such stage: {', '.join(unknown)} (stages: {', '.join(graph)})")
        wanted, pending = set(), list(targets)
        while pending:
            stage = pending.pop()
            if stage not in wanted:
                wanted.add(stage)
                pending += graph[stage]
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(wanted):
        ready = next(s for s in graph if s in wanted and s not in placed and set(graph[s]) <= placed)
        order.append(ready)
        placed.add(ready)
    return order


def retry_only_transient(task, task_run, state) -> bool:
    """Prefect's retry condition: retry a TransientStageFailure, nothing else."""
    try:
        state.result()
    except TransientStageFailure:
        return True
    except Exception:  # noqa: BLE001 - every other failure is final
        return False
    return False


@task(cache_policy=NO_CACHE, task_run_name="{stage}", retries=2,
      retry_delay_seconds=exponential_backoff(backoff_factor=30), retry_condition_fn=retry_only_transient)
def repro_stage(stage: str, repo: str, force: bool = False) -> State:
    """`dvc repro` of exactly this stage; its upstream stages ran (or were found up to date) before it. `force`
    runs it even when DVC finds it up to date (a source DVC cannot watch)."""
    logger = get_run_logger()
    command = ["dvc", "--wait-for-lock", "repro", "--single-item", *(["--force"] if force else []), stage]
    waited_since = time.monotonic()
    while True:  # --wait-for-lock waits for the repository lock; this waits for the stage's own file locks
        result = subprocess.run(command, cwd=repo, capture_output=True, text=True, env=command_env())
        if result.returncode == 0 or BUSY not in result.stderr or time.monotonic() - waited_since > LOCK_WAIT_SECONDS:
            break
        logger.info("another dvc process is using this stage's files: %s; waiting", error_lines(result)[:300])
        time.sleep(LOCK_POLL_SECONDS)
    if result.stdout.strip():
        logger.info("%s\n%s", " ".join(command), result.stdout.rstrip())  # DVC's decision and the stage's ledger
    if result.returncode != 0:
        message = f"{stage} failed ({result.returncode}): {error_lines(result)}"
        if f"exited with {TRANSIENT_EXIT}" in result.stderr + result.stdout:
            raise TransientStageFailure(message)
        raise StageFailed(message)
    if stage in RAN.findall(result.stdout):
        return Completed(message="ran")
    return Completed(name="Skipped", message="up to date: DVC skipped it")


@task(cache_policy=NO_CACHE, task_run_name="{stage}")
def up_to_date(stage: str) -> State:
    """A stage `dvc status` found up to date, with nothing upstream of it run: shown, not started."""
    return Completed(name="Skipped", message="up to date: dvc status found nothing changed")


@task(cache_policy=NO_CACHE, task_run_name="{stage}")
def not_run(stage: str, failed_upstream: list[str]) -> State:
    """A stage whose dependencies failed: shown in the UI, never run on stale inputs."""
    return Cancelled(name="NotRun", message=f"not run: {', '.join(failed_upstream)} failed")


@flow(name="tunepipe-pipeline", log_prints=True)
def pipeline(targets: list[str] | None = None, repo: str = ".", retries: int = 2, retry_delay_seconds: float = 30,
             force: list[str] | None = None, profile: str = "") -> dict[str, list[str]]:
    """Bring the targets (default: the profile's whole pipeline) up to date stage by stage, then publish the
    results. Stages in `force` run even if DVC finds them up to date."""
    repo = str(Path(repo).resolve())
    # Four checks before any stage, two at a time (each is mostly a dvc or python process starting up, and a
    # no-op run is nothing but these): the cache check reads dvc.lock, which the plan never writes, and
    # `dvc dag` takes no lock, so it reads dvc.yaml beside `dvc status`.
    cache_checked = verify_cache.submit(repo)  # a damaged cache object would be checked out as the output
    write_plan(repo, profile)
    cache_checked.result()
    with ThreadPoolExecutor(2) as pool:
        graph_read = pool.submit(stage_graph, repo, profile)
        stale = stale_stages(repo, profile)
        graph = graph_read.result()
    prefix = f"{profile}/dvc.yaml:" if profile else ""
    targets = [t if t.startswith(prefix) else prefix + t for t in targets or []] or None
    force = [t if t.startswith(prefix) else prefix + t for t in force or []]
    stale = set(graph) if stale is None else stale | set(force)
    delays = exponential_backoff(backoff_factor=retry_delay_seconds)(retries) if retries else 0
    stage_task = repro_stage.with_options(retries=retries, retry_delay_seconds=delays)
    outcome: dict[str, str] = {}
    errors: list[str] = []
    for stage in stage_order(graph, targets):
        blocked = [up for up in graph[stage] if outcome[up] in ("failed", "not run")]
        if blocked:
            state = not_run(stage, blocked, return_state=True)
        elif stage in stale or any(outcome[up] == "ran" for up in graph[stage]):
            state = stage_task(stage, repo, stage in force, return_state=True)
        else:  # nothing it reads changed: DVC would skip it, so no dvc process is started for it
            state = up_to_date(stage, return_state=True)
        if state.is_failed():
            outcome[stage] = "failed"
            error = state.result(raise_on_failure=False)  # the stage's own exception, not Prefect's wrapper text
            errors.append(str(error) if isinstance(error, BaseException) else state.message or stage)
        else:
            outcome[stage] = {"Skipped": "skipped", "NotRun": "not run"}.get(state.name, "ran")
    summary = {kind: [s for s, o in outcome.items() if o == kind] for kind in ("ran", "skipped", "failed", "not run")}
    print(", ".join(f"{len(stages)} {kind}" for kind, stages in summary.items()))
    if summary["failed"]:
        raise StageFailed(f"{len(summary['failed'])} stage(s) failed, {len(summary['not run'])} not run: "
                          + " | ".join(errors))
    publish_results(repo, profile)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the pipeline once, one Prefect task per DVC stage")
    run.add_argument("targets", nargs="*", help="dvc.yaml stages, e.g. train@dialogsum-lora (default: all)")
    run.add_argument("--retries", type=int, default=2, help="tries after a transient failure (default 2)")
    run.add_argument("--retry-delay", type=float, default=30, help="first backoff in seconds, doubling (default 30)")
    run.add_argument("--profile", default="", help="a profile folder, e.g. profiles/real (default: the root)")
    args = parser.parse_args()
    pipeline(args.targets or None, str(Path.cwd()), args.retries, args.retry_delay, profile=args.profile.rstrip("/"))


if __name__ == "__main__":
    main()
