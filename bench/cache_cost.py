"""What DVC's check costs when nothing changed, and how it grows as a team adds experiments.

Works on a scratch copy of the workspace (the default pipeline, up to date): data/ and models/ hard-linked,
never written; the DVC cache is the workspace's own, read only. It times `dvc status` and a no-op
`dvc repro` over the default pipeline, then again with 10x and 100x as many experiments (of those on the
shared datasets): each experiment file copied under new names, the plan re-written, the experiment's
outputs hard-linked to the new paths and its dvc.lock entries copied with the name replaced, so every copy is
up to date without training it (DVC hashes each output once; a hard link shares its inode, so later checks
read the hash from DVC's state database). The figure that must stay flat is the cost per stage. The cold run
it compares with is the sum of the stage times recorded when this workspace was last built
(reports/speed/stages/, written by every stage that runs). The Prefect pipeline flow's no-op run (each repeat
starting with the server idle) is timed against a plain no-op `dvc repro` of the same workspace.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from harness import ROOT, target

DVC = str(Path(sys.executable).with_name("dvc")) if Path(sys.executable).with_name("dvc").exists() else "dvc"


def dvc(workspace: Path, *args: str) -> float:
    started = time.perf_counter()
    # stage commands run `python`: the one running this benchmark, whatever PATH the caller had
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run([DVC, *args], cwd=workspace, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": path})
    if done.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {workspace}:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def stale(workspace: Path) -> list[str]:
    # the default's dvc.yaml only: a profile's own dvc.yaml (profiles/*/) is another pipeline
    done = subprocess.run([DVC, "status", "--json", "dvc.yaml"], cwd=workspace, capture_output=True, text=True,
                          check=True)
    return sorted(json.loads(done.stdout or "{}"))


def scratch_copy(into: Path) -> Path:
    big = {".venv", "checkpoints", "data", "models", "dvc_plots", "profiles"}  # profiles: other pipelines
    shutil.copytree(ROOT, into, symlinks=True, ignore=lambda folder, names: [
        n for n in names if (Path(folder) == ROOT and n in big) or (Path(folder).name == ".dvc" and n in ("cache", "tmp"))])
    for folder in ("data", "models"):  # read-only here: hard links cost no disk
        subprocess.run(["cp", "-al", str(ROOT / folder), str(into / folder)], check=True)
    subprocess.run([DVC, "config", "--local", "cache.dir", str(ROOT / ".dvc/cache")], cwd=into, check=True)
    return into


def lock_entries(lock: str) -> list[str]:
    """dvc.lock's stage entries as text, each from its `  name:` line to the next (DVC writes two spaces)."""
    body = lock.split("stages:\n", 1)[1]
    starts = [m.start() for m in re.finditer(r"^  \S", body, re.M)] + [len(body)]
    return [body[a:b] if body[a:b].endswith("\n") else body[a:b] + "\n" for a, b in zip(starts, starts[1:])]


def link_copy(source: Path, target_path: Path) -> None:
    """Hard-link source's files to target_path; a folder that is there already (a file of it was linked as
    another stage's dep first) gets the files it lacks."""
    if not source.exists():
        return
    for file in (sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]):
        linked = target_path / file.relative_to(source) if source.is_dir() else target_path
        if not linked.exists():
            linked.parent.mkdir(parents=True, exist_ok=True)
            os.link(file, linked)


def multiply(workspace: Path, factor: int) -> int:
    """Give every experiment on a shared dataset factor-1 up-to-date copies; returns the experiments after."""
    files = sorted((workspace / "experiments").glob("*.yaml"))
    names = [p.stem for p in files if isinstance(yaml.safe_load(p.read_text()).get("dataset"), str)]
    copies = {name: [f"{name}-x{k:03d}" for k in range(1, factor)] for name in names}
    for name, new in copies.items():
        text = (workspace / "experiments" / f"{name}.yaml").read_text()
        for copy in new:
            (workspace / "experiments" / f"{copy}.yaml").write_text(text)
    subprocess.run([sys.executable, "-m", "stages.plan"], cwd=workspace, check=True, capture_output=True)

    lock = (workspace / "dvc.lock").read_text()
    extra = []
    for entry in lock_entries(lock):
        stage, _, item = entry.split(":\n", 1)[0].strip().partition("@")
        if item not in copies:
            continue
        pattern = re.compile(rf"(?<![\w-]){re.escape(item)}(?![\w-])")
        for copy in copies[item]:
            for path in re.findall(r"- path: (\S+)", entry):
                if pattern.search(path):
                    link_copy(workspace / path, workspace / pattern.sub(copy, path))
            extra.append(pattern.sub(copy, entry))
    (workspace / "dvc.lock").write_text(lock.rstrip("\n") + "\n" + "".join(extra))
    return len(files) + sum(map(len, copies.values()))


def time_checks(workspace: Path, repeats: int) -> dict[str, float]:
    status = statistics.median(dvc(workspace, "status", "-q") for _ in range(repeats))
    repro = statistics.median(dvc(workspace, "repro", "-q") for _ in range(repeats))
    return {"status_s": round(status, 2), "noop_repro_s": round(repro, 2)}


def cold_run_seconds() -> tuple[float, int]:
    records = list((ROOT / "reports/speed/stages").glob("*.json"))
    return sum(json.loads(p.read_text())["seconds"] for p in records), len(records)


def params_share(workspace: Path, dump: Path) -> float:
    """The share of a `dvc status` spent reading params files (DVC reads a stage's params file for each
    stage: each experiment's own small file now, params.yaml only for the shared datasets and models)."""
    import pstats

    subprocess.run([DVC, "status", "-q", "--cprofile-dump", str(dump)], cwd=workspace, capture_output=True)
    stats = pstats.Stats(str(dump)).stats
    total = max(cumulative for (_, _, name), (_, _, _, cumulative, _) in stats.items() if name == "status")
    reading = sum(cumulative for (file, _, name), (_, _, _, cumulative, _) in stats.items()
                  if name == "read_param_file" and file.endswith("param.py"))
    return reading / total


def prefect_server(home: Path) -> tuple[subprocess.Popen, str]:
    """A local Prefect server (API + UI) on a free port, as `make ui` starts one, analytics off."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": ""}
    server = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return server, url
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("prefect server did not start in 120 s")


def flow_noop(workspace: Path, home: Path, repeats: int) -> dict[str, float]:
    """The pipeline flow's no-op run (one task per stage, every one Skipped) against plain `dvc repro`, on the
    same up-to-date workspace. The flow is timed from its start to its end as Prefect records the run (the
    Python and Prefect imports of the command are left out, as dvc's own start-up is not)."""
    server, url = prefect_server(home)
    try:
        env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(home), "DVC_NO_ANALYTICS": "1",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        probe = ("import json, sys, time; from flows.pipeline import pipeline; "
                 "started = time.perf_counter(); summary = pipeline(repo='.', retries=0); "
                 "print(json.dumps({'seconds': time.perf_counter() - started, 'skipped': len(summary['skipped']), "
                 "'ran': len(summary['ran'])}))")
        runs = []
        # one untimed run first, as `dvc repro`'s first check is left out: on a new server it registers the
        # flow, and in a new copy the cache check hashes every object once
        for repeat in range(repeats + 1):
            # the server records a run's task states from events for a few seconds after the run ends; a run
            # started meanwhile shares the 2 cores with that work (1.3x vs 2x the `dvc repro` time here), and a
            # scheduled or hand-started run finds the server idle
            time.sleep(10)
            done = subprocess.run([sys.executable, "-c", probe], cwd=workspace, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"flow run failed: {done.stderr[-2000:]}")
            if repeat:
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        if any(run["ran"] for run in runs):
            raise RuntimeError(f"the no-op flow ran stages: {runs}")
        return {"flow_noop_s": round(statistics.median(r["seconds"] for r in runs), 2), "tasks": runs[0]["skipped"]}
    finally:
        server.terminate()
        server.wait(timeout=30)


def measure(factors: tuple[int, ...] = (1, 10, 100), repeats: int = 3) -> dict[str, Any]:
    section: dict[str, Any] = {"title": "Cache check: no-op `dvc repro`, `dvc status` and the pipeline flow",
                               "rows": [], "targets": [], "notes": []}
    if stale(ROOT):
        section["skipped"] = "the default pipeline is not up to date here: run `make repro` first"
        return section
    cold, stages = cold_run_seconds()
    section["inputs"] = {"pipeline": "the embedded default (experiments/*.yaml)", "repeats": f"median of {repeats}",
                         "cold run": f"{cold:.0f} s: the sum of {stages} stage times recorded when this workspace "
                                     "was last built (reports/speed/stages/)"}
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-cache-", dir=ROOT.parent if os.access(ROOT.parent, os.W_OK) else None) as tmp:
        for factor in factors:
            workspace = scratch_copy(Path(tmp) / f"x{factor}")
            experiments = multiply(workspace, factor) if factor > 1 else len(list((workspace / "experiments").glob("*.yaml")))
            # the plan check (a new experiment file) and the report (it reads every experiment) are the stages
            # that copies make stale
            left = [s for s in stale(workspace) if s not in ("plan", "report")]
            if left:
                raise RuntimeError(f"copies at {factor}x are not up to date: {left[:5]}")
            warm = dvc(workspace, "repro", "-q")  # runs those two once; hashes every output into DVC's state
            stages = len(lock_entries((workspace / "dvc.lock").read_text()))
            timings = time_checks(workspace, repeats if factor < 100 else 1)
            row = {"experiments": experiments, "stages": stages, "first_check_s": round(warm, 1), **timings,
                   "status_ms_per_stage": round(1000 * timings["status_s"] / stages, 2),
                   "noop_repro_ms_per_stage": round(1000 * timings["noop_repro_s"] / stages, 2),
                   "noop_repro_share_of_cold": round(timings["noop_repro_s"] / cold, 5) if cold and factor == 1 else None}
            if factor == 1:
                row.update(flow_noop(workspace, Path(tmp) / "prefect-home", repeats))
            if factor == factors[-1] and factor > 1:
                row["params_share_of_status"] = round(params_share(workspace, Path(tmp) / "status.prof"), 3)
            results.append(row)
            print(f"[bench] cache at {factor}x: {json.dumps(row)}", flush=True)  # a long run shows each scale
            shutil.rmtree(workspace, ignore_errors=True)
    section["rows"] = results
    base = results[0]
    section["targets"].append(target("no-op `dvc repro`, default pipeline (s)", base["noop_repro_s"], "<= 3 s",
                                     base["noop_repro_s"] <= 3))
    flow = base["flow_noop_s"] / base["noop_repro_s"]
    section["targets"].append(target(f"pipeline flow no-op ({base['tasks']} Skipped tasks) vs `dvc repro`", flow,
                                     "<= 2x", flow <= 2))
    for row in results[1:]:
        for key in ("noop_repro_ms_per_stage", "status_ms_per_stage"):
            growth = row[key] / base[key]
            section["targets"].append(target(f"{key.split('_ms')[0].replace('_', ' ')} per stage at "
                                             f"{row['experiments']} vs {base['experiments']} experiments", growth,
                                             "<= 1.5x (flat)", growth <= 1.5))
    section["notes"].append("first_check_s is the first `dvc repro` after adding the copies: it runs the plan check "
                            "and the report (their inputs changed) and hashes every new output once.")
    return section


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
