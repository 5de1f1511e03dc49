"""Check DVC's local cache against the hashes that name its files, before a run uses them.

DVC trusts an object in its cache once it exists: a cache file damaged on disk (a bad sector, an interrupted
copy, a hand edit through a hard link) is checked out as it is, and a stage that re-creates the same output
is even replaced by the damaged copy. So the pipeline flow runs this first: every object dvc.lock refers to
is hashed (md5, the name DVC gave it; a folder's `.dir` listing too), and a file whose bytes no longer match
its name is moved to `<cache>/corrupted/` (kept, not deleted) and reported. DVC then sees the object as
missing and pulls it from the remote or re-runs the stage. Objects already checked and unchanged since
(same size, mtime and inode) are not hashed again, so a no-op run stays fast; `--full` hashes everything
(damage that kept a file's size and mtime).

    python -m flows.cache_check [--full]   # report and move aside what is damaged; exit 1 if anything was
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import yaml

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.dvc_cli import dvc

STATE = Path(".dvc/tmp/tunepipe-verified.json")  # path -> [size, mtime_ns, inode] of objects found intact


def md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def locked_objects(repo: Path) -> dict[str, str]:
    """Every object hash dvc.lock names (a folder's `<md5>.dir`), with the output path it belongs to."""
    lock_file = repo / "dvc.lock"
    if not lock_file.exists():
        return {}
    lock = yaml.safe_load(lock_file.read_text(encoding="utf-8")) or {}
    return {out["md5"]: out["path"] for stage in (lock.get("stages") or {}).values()
            for out in stage.get("outs") or [] if out.get("md5")}


def object_path(cache: Path, name: str) -> Path:
    return cache / "files" / "md5" / name[:2] / name[2:]


def check_cache(repo: str, full: bool = False) -> list[str]:
    """Hash every object dvc.lock reaches; move the damaged ones aside. Returns one line per damaged file."""
    root = Path(repo)
    cache = Path(dvc(repo, "cache", "dir").stdout.strip())
    state_file = root / STATE
    verified = json.loads(state_file.read_text()) if state_file.exists() and not full else {}
    damaged: list[str] = []
    pending = list(locked_objects(root).items())
    while pending:
        name, output = pending.pop()
        path = object_path(cache, name)
        if not path.is_file():
            continue  # missing: DVC itself reports that, and pulls or rebuilds it
        stat = path.stat()
        key, seen = str(path), [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        intact = verified.get(key) == seen or md5_file(path) == name.removesuffix(".dir")
        if not intact:
            quarantine = cache / "corrupted" / path.name
            quarantine.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, quarantine)
            verified.pop(key, None)
            damaged.append(f"{output}: cache object {name} does not match its hash (damaged on disk); moved to "
                           f"{quarantine}; `dvc pull` or `dvc repro` restores it")
            continue
        verified[key] = seen
        if name.endswith(".dir"):  # a folder: its listing names the objects of its files
            listing = json.loads(path.read_text(encoding="utf-8"))
            pending += [(entry["md5"], f"{output}/{entry['relpath']}") for entry in listing]
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(verified))
    return damaged


@task(cache_policy=NO_CACHE)
def verify_cache(repo: str) -> list[str]:
    """The pipeline flow's first task: damaged cache objects are moved aside (and reported) before DVC uses them."""
    damaged = check_cache(repo)
    for line in damaged:
        get_run_logger().warning(line)
    return damaged


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.cache_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="hash every object, also those checked before")
    damaged = check_cache(".", parser.parse_args().full)
    for line in damaged:
        print(f"error: {line}", file=sys.stderr)
    print(f"cache check: {len(damaged)} damaged object(s)" if damaged else "cache check: every object intact")
    sys.exit(1 if damaged else 0)


if __name__ == "__main__":
    main()
