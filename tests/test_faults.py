"""Fault injection and concurrency on the project's own dvc.yaml and stages (a tiny Llama from a config, the
sample DialogSum rows, a real git + DVC repository).

Each long stage is killed with SIGKILL (with DVC around it) at a random point of its run; then `dvc repro`
must end with every output byte-identical to an uninterrupted run and `dvc status` clean, and no partial
output may ever be taken as done. Two `dvc repro` started at once in one workspace: one waits for the lock or
stops with DVC's lock message, the other completes, and nothing is corrupted.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.cache_check import repair_rwlock, sweep_orphaned_temporaries
from tests.test_resume import ENV, make_repo, plan
from tests.workspace import edit

STAGES = ["download@dialogsum", "convert@dialogsum", "tokenize@toy", "train@toy", "predict_after@toy",
          "merge@toy"]
SEED = int(os.environ.get("TUNEPIPE_FAULT_SEED", time.time_ns() % 10_000))  # printed on failure, to replay


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["dvc", *args], cwd=root, env=ENV, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, f"dvc {' '.join(args)}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


def with_merge(root: Path) -> Path:
    experiment = root / "experiments/toy.yaml"
    edit(experiment, "merge", {"tolerance": 0.001, "threads": 1})
    edit(experiment, "train.max_steps", 10)
    edit(experiment, "train.checkpoint_steps", 5)
    plan(root)  # a merge stage for it
    subprocess.run(["git", "commit", "-qam", "with merge"], cwd=root, env=ENV, check=True)
    return root


def outputs(root: Path) -> dict[str, str]:
    """Every output of every stage with its hash, as dvc.lock records it."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def file_bytes(root: Path, paths) -> dict[str, bytes]:
    found = {}
    for path in paths:
        target = root / path
        for file in (sorted(target.rglob("*")) if target.is_dir() else [target]):
            if file.is_file():
                found[str(file.relative_to(root))] = file.read_bytes()
    return found


def stage_seconds(root: Path, stage: str) -> float:
    """How long the stage took in the uninterrupted run (its own record in reports/speed/stages)."""
    name, item = stage.split("@")
    name = {"predict_after": "predict"}.get(name, name)
    item = f"{item}+after" if stage.startswith("predict_after") else item
    return json.loads((root / "reports/speed/stages" / f"{name}@{item}.json").read_text())["seconds"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, bytes]]:
    root = with_merge(make_repo(tmp_path_factory.mktemp("reference") / "repo"))
    dvc(root, "repro")
    # no stage writes into another's output (a datasets cache file in data/tokenized/ once did)
    assert json.loads(dvc(root, "status", "--json").stdout) == {}
    hashes = outputs(root)
    assert {"models/merged/toy", "data/predictions/toy/after.jsonl", "data/tokenized/toy"} <= set(hashes)
    return root, hashes, file_bytes(root, hashes)


def stage_process(dvc_process: subprocess.Popen, stage: str, timeout: float = 120):
    """The stage's own python process, once DVC has started it (`python -m stages.<module> <item> ...`)."""
    import psutil

    name, item = stage.split("@")
    module = {"predict_after": "predict"}.get(name, name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for child in psutil.Process(dvc_process.pid).children(recursive=True):
                line = child.cmdline()
                if f"stages.{module}" in line and item in line:
                    return child
        except psutil.NoSuchProcess:
            pass
        assert dvc_process.poll() is None, f"dvc ended before the {stage} stage started"
        time.sleep(0.01)
    raise AssertionError(f"the {stage} stage did not start within {timeout} s")


def kill_mid_stage(root: Path, stage: str, rng: random.Random) -> float:
    """SIGKILL dvc and the stage together at a random point of the stage's own run (a fraction of how long it
    took uninterrupted, counted from its process's start); returns the delay. A kill that would land after the
    stage ended is tried again earlier, so every test kills a running stage."""
    fraction = rng.uniform(0.05, 0.9)
    for _ in range(4):
        process = subprocess.Popen(["dvc", "repro", "--force", "--single-item", stage], cwd=root, env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        child = stage_process(process, stage)
        delay = fraction * (stage_seconds(root, stage) + 1.0)  # + the stage's imports before its clock starts
        time.sleep(delay)
        if child.is_running() and child.status() != "zombie":
            os.killpg(process.pid, signal.SIGKILL)  # DVC and the stage with it
            process.wait()
            return delay
        # the stage ended first: let DVC finish recording it (killing it while it writes dvc.lock tests DVC,
        # not the stage), then try again earlier
        assert process.wait() == 0
        fraction /= 3
    raise AssertionError(f"seed {SEED}: could not kill {stage} while it ran")


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_killed_at_a_random_point_reruns_to_the_same_bytes(reference, stage):
    root, hashes, contents = reference
    print(f"fault seed {SEED} (TUNEPIPE_FAULT_SEED={SEED} replays it)")
    delay = kill_mid_stage(root, stage, random.Random(f"{SEED}-{stage}"))

    # DVC rewrites .dvc/tmp/rwlock in place: killed in that moment it leaves it empty and every dvc command
    # fails until it is repaired, which the pipeline flow does first (python -m flows.cache_check by hand)
    repair_rwlock(str(root))  # (test_a_half_written_dvc_lock_file_is_repaired_only_when_no_dvc_runs tests it)
    # a kill mid-write leaves the write's temporary; DVC may restore the output from its run cache without
    # running the stage that would clear it, so the flow sweeps orphans first (python -m flows.cache_check)
    sweep_orphaned_temporaries(root)
    # no partial output: `--force` had DVC remove the stage's outputs first, so each cached output the kill
    # left is one the stage finished writing (atomically, by rename), and it must be complete. A random kill
    # may come before any output exists, so this may check nothing: a kill in the middle of a write, every
    # time, is test_common.py::test_a_writer_killed_outright_leaves_no_output_and_the_next_write_clears_...
    for path in cached_outputs(root, stage):
        if (root / path).exists():
            assert file_bytes(root, [path]) == subset(contents, [path]), \
                f"seed {SEED}: {stage} killed after {delay:.2f}s left a partial {path}"

    dvc(root, "repro")
    assert outputs(root) == hashes, f"seed {SEED}: {stage} killed after {delay:.2f}s"
    assert file_bytes(root, hashes) == contents
    assert json.loads(dvc(root, "status", "--json").stdout) == {}
    assert not list(root.rglob(".*.tmp-*")), "a temporary file or folder of an atomic write was left behind"


def subset(contents: dict[str, bytes], paths: list[str]) -> dict[str, bytes]:
    return {name: data for name, data in contents.items() if any(name == p or name.startswith(f"{p}/") for p in paths)}


def cached_outputs(root: Path, stage: str) -> list[str]:
    """The stage's outputs that DVC caches (the bookkeeping ones, cache: false, are written as training goes)."""
    name, _, item = stage.partition("@")
    body = yaml.safe_load((root / "dvc.yaml").read_text())["stages"][name]
    body = body.get("do", body)
    return [out.replace("${key}", item) for out in body.get("outs", []) if isinstance(out, str)]


@pytest.mark.parametrize("first, second", [("train@toy", "train@toy"), ("train@toy", "tokenize@toy")])
def test_two_repro_at_once_one_runs_the_other_stops_cleanly_and_nothing_is_corrupted(reference, first, second):
    """DVC locks the repository while it plans and each stage's outputs and dependencies while it runs; a second
    `dvc repro` that needs them stops at once with a message naming the blocking process (--wait-for-lock only
    waits for the repository lock; the Prefect flow also waits for these, see test_flow.py)."""
    root, hashes, contents = reference
    started = [subprocess.Popen(["dvc", "--wait-for-lock", "repro", "--force", "--single-item", stage], cwd=root,
                                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for stage in (first, second)]
    results = [(*process.communicate(), process.returncode) for process in started]
    assert repair_rwlock(str(root)) is None  # two live processes never damage it
    codes = sorted(code for _, _, code in results)
    assert codes[0] == 0 and codes[1] != 0, results  # one ran; the other stopped, it did not run beside it
    [(_, refused, _)] = [result for result in results if result[2] != 0]
    assert "is being blocked by" in refused or "Unable to acquire lock" in refused, refused
    dvc(root, "repro")
    assert outputs(root) == hashes and file_bytes(root, hashes) == contents
    assert json.loads(dvc(root, "status", "--json").stdout) == {}


def test_a_half_written_dvc_lock_file_is_repaired_only_when_no_dvc_runs(reference):
    root, hashes, contents = reference
    rwlock = root / ".dvc/tmp/rwlock"
    rwlock.write_text("")  # what a dvc process killed while rewriting it leaves
    broken = dvc(root, "status", check=False)
    assert broken.returncode != 0 and "Unable to read RWLock-file" in broken.stderr
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "dvc"], cwd=root)
    try:
        with pytest.raises(RuntimeError, match=r"dvc processes \[\d+\] are running here"):
            repair_rwlock(str(root))
    finally:
        busy.kill()
        busy.wait()
    assert "was damaged" in repair_rwlock(str(root))
    assert [p.read_text() for p in root.glob(".dvc/tmp/rwlock.damaged-*")] == [""]  # kept, not deleted
    assert json.loads(dvc(root, "status", "--json").stdout) == {}
