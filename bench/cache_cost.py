"""What DVC's check costs when nothing changed, and how it grows as a team adds experiments.

Works on a scratch copy of the workspace (the default pipeline, up to date): data/ and models/ hard-linked,
never written; the DVC cache is the workspace's own, read only. It times `dvc status` and a no-op
`dvc repro` over the default pipeline, then again with 3x and 10x as many experiments: each experiment's
params entries copied under new names, its outputs hard-linked to the new paths and its dvc.lock entries
copied with the name replaced, so every copy is up to date without training it (DVC hashes each output
once; a hard link shares its inode, so later checks read the hash from DVC's state database). The cold
run it compares with is the sum of the stage times recorded when this workspace was last built
(reports/speed/stages/, written by every stage that runs).
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

GROUPS = ("experiments", "tokenize", "train", "merge", "predict", "score")
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
    done = subprocess.run([DVC, "status", "--json"], cwd=workspace, capture_output=True, text=True, check=True)
    return sorted(json.loads(done.stdout or "{}"))


def scratch_copy(into: Path) -> Path:
    big = {".venv", "checkpoints", "data", "models", "dvc_plots"}
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
    if target_path.exists() or not source.exists():
        return
    target_path.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        subprocess.run(["cp", "-al", str(source), str(target_path)], check=True)
    else:
        os.link(source, target_path)


def multiply(workspace: Path, factor: int) -> int:
    """Give every experiment factor-1 up-to-date copies; returns the number of experiments after."""
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    names = list(params["experiments"])
    copies = {name: [f"{name}-x{k:03d}" for k in range(1, factor)] for name in names}
    for group in GROUPS:
        for name in names:
            if name in params.get(group, {}):
                for copy in copies[name]:
                    params[group][copy] = params[group][name]
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))

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
    return len(names) * factor


def time_checks(workspace: Path, repeats: int) -> dict[str, float]:
    status = statistics.median(dvc(workspace, "status", "-q") for _ in range(repeats))
    repro = statistics.median(dvc(workspace, "repro", "-q") for _ in range(repeats))
    return {"status_s": round(status, 2), "noop_repro_s": round(repro, 2)}


def cold_run_seconds() -> tuple[float, int]:
    records = list((ROOT / "reports/speed/stages").glob("*.json"))
    return sum(json.loads(p.read_text())["seconds"] for p in records), len(records)


def params_share(workspace: Path, dump: Path) -> float:
    """The share of a `dvc status` spent re-reading params.yaml (DVC parses it again for every stage)."""
    import pstats

    subprocess.run([DVC, "status", "-q", "--cprofile-dump", str(dump)], cwd=workspace, capture_output=True)
    stats = pstats.Stats(str(dump)).stats
    total = max(cumulative for (_, _, name), (_, _, _, cumulative, _) in stats.items() if name == "status")
    reading = sum(cumulative for (file, _, name), (_, _, _, cumulative, _) in stats.items()
                  if name == "read_param_file" and file.endswith("param.py"))
    return reading / total


def measure(factors: tuple[int, ...] = (1, 3, 10), repeats: int = 3) -> dict[str, Any]:
    section: dict[str, Any] = {"title": "Cache check: no-op `dvc repro` and `dvc status`", "rows": [], "targets": [],
                               "notes": []}
    if stale(ROOT):
        section["skipped"] = "the default pipeline is not up to date here: run `make repro` first"
        return section
    cold, stages = cold_run_seconds()
    section["inputs"] = {"pipeline": "the embedded default (params.yaml)", "repeats": f"median of {repeats}",
                         "cold run": f"{cold:.0f} s: the sum of {stages} stage times recorded when this workspace "
                                     "was last built (reports/speed/stages/)"}
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-cache-", dir=ROOT.parent if os.access(ROOT.parent, os.W_OK) else None) as tmp:
        for factor in factors:
            workspace = scratch_copy(Path(tmp) / f"x{factor}")
            experiments = multiply(workspace, factor) if factor > 1 else len(
                yaml.safe_load((workspace / "params.yaml").read_text())["experiments"])
            # the report reads every experiment's files: it is the one stage a new experiment makes stale
            left = [s for s in stale(workspace) if s != "report"]
            if left:
                raise RuntimeError(f"copies at {factor}x are not up to date: {left[:5]}")
            warm = dvc(workspace, "repro", "-q")  # runs the report once; hashes every output into DVC's state
            stages = len(lock_entries((workspace / "dvc.lock").read_text()))
            timings = time_checks(workspace, repeats if factor < 10 else 1)
            if factor == factors[-1] and factor > 1:
                share = params_share(workspace, Path(tmp) / "status.prof")
            results.append({"experiments": experiments, "stages": stages, "first_check_s": round(warm, 1), **timings,
                            "noop_repro_share_of_cold": round(timings["noop_repro_s"] / cold, 5) if cold else None})
            shutil.rmtree(workspace, ignore_errors=True)
    section["rows"] = results
    base = results[0]
    section["targets"].append(target("no-op `dvc repro`, default pipeline (s)", base["noop_repro_s"], "<= 3 s",
                                     base["noop_repro_s"] <= 3))
    for row in results[1:]:
        growth = row["noop_repro_s"] / base["noop_repro_s"]
        scale = row["stages"] / base["stages"]
        section["targets"].append(target(f"no-op repro growth at {row['experiments']} experiments", growth,
                                         f"<= {scale:.1f}x (the stage count's growth: linear)", growth <= scale * 1.1))
    section["notes"].append("first_check_s is the first `dvc repro` after adding the copies: it re-runs the report "
                            "(its inputs changed) and hashes every new output once.")
    if len(results) > 1:
        section["notes"].append(
            f"why the check grows faster than the stage count: at {results[-1]['experiments']} experiments "
            f"{share:.0%} of `dvc status` is DVC parsing params.yaml again for each stage (dvc/dependency/param.py "
            "read_param_file), and params.yaml grows with the experiments: stages x file size. 100x was not run: "
            f"by that rule (cost ~ experiments squared) one no-op check would take about "
            f"{results[-1]['noop_repro_s'] * (100 / factors[-1]) ** 2 / 60:.0f} min. The fix is params split per "
            "experiment (a small file for each stage to parse), not yet done.")
    return section


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
