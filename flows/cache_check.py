"""Check DVC's local cache against the hashes that name its files, and DVC's lock file, before a run.

DVC rewrites `.dvc/tmp/rwlock` in place: a dvc process killed in that moment leaves it empty, and every
later dvc command fails ("Unable to read RWLock-file ... JSON structure is corrupted") until someone
deletes it. It only lists running processes, so when no other dvc process is running in this repository it
is replaced by an empty one (the damaged copy kept beside it) under DVC's own guard lock.

DVC trusts an object in its cache once it exists: a cache file damaged on disk (a bad sector, an interrupted
copy, a hand edit through a hard link) is checked out as it is, and a stage that re-creates the same output
is even replaced by the damaged copy. So the pipeline flow runs this first: every object dvc.lock refers to
is hashed (md5, the name DVC gave it; a folder's `.dir` listing too), and a file whose bytes no longer match
its name is moved to `<cache>/corrupted/` (kept, not deleted) and reported. DVC then sees the object as
missing and pulls it from the remote or re-runs the stage. Objects already checked and unchanged since
(same size, mtime and inode) are not hashed again, so a no-op run stays fast; `--full` hashes everything
(damage that kept a file's size and mtime).

A stage killed in the middle of an atomic write leaves its hidden temporary (`.<output>.tmp-<pid>-...`); if
DVC then restores that output from its run cache the stage never runs to clear it, so those whose process is
gone are removed here too.

    python -m flows.cache_check [--full]   # repair the lock file; report and move aside damaged objects
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.dvc_cli import dvc
from tunepipe.files import process_alive

STATE = Path(".dvc/tmp/tunepipe-verified.json")  # path -> [size, mtime_ns, inode] of objects found intact


def md5_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


def locked_objects(repo: Path) -> dict[str, str]:
    """Every object hash dvc.lock names (a folder's `<md5>.dir`), with the output path it belongs to."""
    lock_file = repo / "dvc.lock"
    if not lock_file.exists():
        return {}
    # libyaml's loader where PyYAML has it: the pure-Python one took 0.5 s of a no-op flow run on 123 stages
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    lock = yaml.load(lock_file.read_text(encoding="utf-8"), Loader=loader) or {}
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
    """The pipeline flow's first task: a damaged lock file is repaired and damaged cache objects are moved
    aside (and reported) before DVC uses them."""
    repaired = repair_rwlock(repo)
    if repaired:
        get_run_logger().warning(repaired)
    for orphan in sweep_orphaned_temporaries(repo):
        get_run_logger().warning(f"removed {orphan}: the temporary of a write whose process was killed")
    damaged = check_cache(repo)
    for line in damaged:
        get_run_logger().warning(line)
    return damaged


def other_dvc_processes(repo: Path) -> list[int]:
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if process.pid != os.getpid() and "dvc" in " ".join(process.info["cmdline"] or []) \
                    and Path(process.cwd()).resolve() == repo.resolve():
                found.append(process.pid)
        except (psutil.Error, OSError):  # gone, or not ours to inspect
            continue
    return found


def sweep_orphaned_temporaries(root: Path | str) -> list[Path]:
    """Remove every temporary of an atomic write (tunepipe.files.temporary_prefix names it
    `.<output>.tmp-<pid>-...`) whose writer process is gone; returns those removed. Hidden folders (.git, .dvc,
    .venv) are not entered: no output lives there. A live writer's temporary is left be."""
    removed = []
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        for name in [*subfolders, *files]:
            pid = name.rsplit(".tmp-", 1)[-1].split("-", 1)[0] if name.startswith(".") and ".tmp-" in name else ""
            if pid.isdigit() and not process_alive(int(pid)):
                stale = here / name
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
                removed.append(stale)
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
    return removed


def repair_rwlock(repo: str) -> str | None:
    """Replace a damaged `.dvc/tmp/rwlock` by an empty one; returns what was done, or None if it was sound."""
    from dvc.lock import make_lock

    path = Path(repo) / ".dvc" / "tmp" / "rwlock"
    if not path.exists():
        return None
    with make_lock(str(path.parent / "rwlock.lock"), tmp_dir=str(path.parent), hardlink_lock=False):
        try:
            json.loads(path.read_text(encoding="utf-8"))
            return None
        except json.JSONDecodeError:
            pass
        running = other_dvc_processes(Path(repo))
        if running:
            raise RuntimeError(f"{path} is damaged but dvc processes {running} are running here: wait for them")
        kept = path.with_name(f"rwlock.damaged-{int(time.time())}")
        os.replace(path, kept)
        path.write_text("{}", encoding="utf-8")
    return f"{path} was damaged (a dvc process killed while writing it): replaced, the old one kept as {kept.name}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.cache_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="hash every object, also those checked before")
    args = parser.parse_args()
    repaired = repair_rwlock(".")
    if repaired:
        print(repaired)
    for orphan in sweep_orphaned_temporaries("."):
        print(f"removed {orphan}: the temporary of a write whose process was killed")
    damaged = check_cache(".", args.full)
    for line in damaged:
        print(f"error: {line}", file=sys.stderr)
    print(f"cache check: {len(damaged)} damaged object(s)" if damaged else "cache check: every object intact")
    sys.exit(1 if damaged else 0)


if __name__ == "__main__":
    main()
