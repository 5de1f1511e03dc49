"""Sharing results across a team: an S3 remote served by a real S3 API on localhost (moto's server, reached
through dvc-s3 and botocore, nothing mocked in the client), and experiments shared through a bare git remote.
The project's own default remote (a local folder) is tested on the real pipeline in test_pipeline.py."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_flow import git

BIN = Path(sys.executable).parent
MAKE = """import json, sys, yaml
n = yaml.safe_load(open("params.yaml"))["count"]["n"]
open("numbers.txt", "w").write("".join(f"{i}\\n" for i in range(n * 1000)))
json.dump({"n": n, "lines": n * 1000}, open("metrics.json", "w"))
"""
STAGES = """stages:
  make:
    cmd: python make.py
    deps: [make.py]
    params: [count.n]
    outs: [numbers.txt]
    metrics:
      - metrics.json: {cache: false}
"""


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


@pytest.fixture
def team_repo(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    dvc(repo, "init", "-q")
    (repo / "params.yaml").write_text("count:\n  n: 3\n")
    (repo / "dvc.yaml").write_text(STAGES)
    (repo / "make.py").write_text(MAKE)
    dvc(repo, "repro")
    return repo


def fresh_clone(source: Path, into: Path) -> Path:
    git(into.parent, "clone", "-q", str(source), into.name)
    return into


def assert_same_bytes(first: Path, second: Path, *names: str) -> None:
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


@pytest.fixture
def s3_endpoint(monkeypatch):
    """moto's S3 server on a free localhost port, with a bucket; credentials only in the environment."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for key, value in {"AWS_ACCESS_KEY_ID": "team-key", "AWS_SECRET_ACCESS_KEY": "team-secret",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="team-cache")
    yield endpoint, s3
    server.stop()


def test_s3_remote_round_trip_reproduces_without_running_a_stage(team_repo, s3_endpoint, tmp_path):
    endpoint, s3 = s3_endpoint
    dvc(team_repo, "remote", "add", "-d", "team-s3", "s3://team-cache/tunepipe")
    dvc(team_repo, "remote", "modify", "team-s3", "endpointurl", endpoint)
    git(team_repo, "add", "-A")
    git(team_repo, "commit", "-qm", "results")
    dvc(team_repo, "push")
    stored = s3.list_objects_v2(Bucket="team-cache", Prefix="tunepipe/")["Contents"]
    assert len(stored) == 1 and stored[0]["Size"] == len((team_repo / "numbers.txt").read_bytes())
    config = (team_repo / ".dvc" / "config").read_text()
    assert "team-secret" not in config and "team-key" not in config  # credentials stay in the environment

    clone = fresh_clone(team_repo, tmp_path / "clone")
    assert not (clone / "numbers.txt").exists()
    dvc(clone, "pull")
    reproduced = dvc(clone, "repro")
    assert "Running stage" not in reproduced.stdout and "didn't change, skipping" in reproduced.stdout
    assert json.loads(dvc(clone, "status", "--json").stdout) == {}
    assert_same_bytes(team_repo, clone, "numbers.txt", "metrics.json", "dvc.lock")


def test_experiments_round_trip_through_a_bare_git_remote(team_repo, tmp_path):
    remote_cache = tmp_path / "dvc-remote"
    dvc(team_repo, "remote", "add", "-d", "team", str(remote_cache))
    git(team_repo, "add", "-A")
    git(team_repo, "commit", "-qm", "baseline")
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    git(team_repo, "remote", "add", "origin", str(origin))
    git(team_repo, "push", "-q", "origin", "main")

    dvc(team_repo, "exp", "run", "-S", "count.n=5", "--name", "five")
    dvc(team_repo, "exp", "push", "origin", "five")  # the experiment's commit to git, its outputs to the DVC remote

    clone = fresh_clone(origin, tmp_path / "teammate")
    dvc(clone, "exp", "pull", "origin", "five")
    shown = json.loads(dvc(clone, "exp", "show", "--json").stdout)
    names = {rev["name"] for baseline in shown for exp in baseline.get("experiments") or [] for rev in exp["revs"]}
    assert "five" in names
    dvc(clone, "exp", "apply", "five")
    dvc(clone, "pull")
    assert json.loads((clone / "metrics.json").read_text()) == {"n": 5, "lines": 5000}
    assert (clone / "numbers.txt").read_text().count("\n") == 5000
    reproduced = dvc(clone, "repro")
    assert "Running stage" not in reproduced.stdout  # the teammate has the experiment's outputs, not a recipe


def damage(path: Path) -> None:
    path.chmod(0o644)  # DVC makes cache files read-only
    path.write_bytes(b"damaged on disk\n")


def cache_object(repo: Path, output: str) -> Path:
    import yaml

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    [md5] = [out["md5"] for stage in lock["stages"].values() for out in stage["outs"] if out["path"] == output]
    return repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def test_a_damaged_local_cache_object_is_found_moved_aside_and_rebuilt(team_repo):
    from flows.cache_check import check_cache

    good = (team_repo / "numbers.txt").read_bytes()
    assert check_cache(str(team_repo)) == []
    damaged = cache_object(team_repo, "numbers.txt")
    damage(damaged)
    (team_repo / "numbers.txt").unlink()
    [line] = check_cache(str(team_repo))
    assert line.startswith("numbers.txt: cache object") and "does not match its hash" in line
    kept = team_repo / ".dvc/cache/corrupted" / damaged.name
    assert kept.read_bytes() == b"damaged on disk\n" and not damaged.exists()  # kept aside, never used
    reproduced = dvc(team_repo, "repro")
    assert "Running stage 'make'" in reproduced.stdout  # DVC sees the object missing and rebuilds it
    assert (team_repo / "numbers.txt").read_bytes() == good
    assert json.loads(dvc(team_repo, "status", "--json").stdout) == {}
    assert check_cache(str(team_repo)) == [] and damaged.exists()


def test_a_damaged_object_on_the_remote_is_refused_by_its_hash(team_repo, tmp_path):
    remote = tmp_path / "dvc-remote"
    dvc(team_repo, "remote", "add", "-d", "team", str(remote))
    git(team_repo, "add", "-A")
    git(team_repo, "commit", "-qm", "results")
    dvc(team_repo, "push")
    [stored] = [p for p in remote.rglob("*") if p.is_file()]
    damage(stored)
    clone = fresh_clone(team_repo, tmp_path / "clone")
    pulled = subprocess.run(["dvc", "pull"], cwd=clone, capture_output=True, text=True)
    assert pulled.returncode != 0
    md5 = stored.parent.name + stored.name
    assert f"md5: {md5}" in pulled.stderr and "numbers.txt" in pulled.stderr  # named, with the output it belongs to
    assert not (clone / "numbers.txt").exists()  # the damaged bytes never reach the workspace
    assert list((clone / ".dvc").rglob(stored.name)) == []  # nor the clone's cache
