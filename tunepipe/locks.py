"""What DVC recorded of each output: the `md5` of every `outs` entry of a dvc.lock, and two locks compared.

A change that must keep every output's bytes (a move of code, a new dependency pin) is checked against DVC's
own record: re-run the pipeline, then compare the new dvc.lock with the one committed before the change.

    python -m tunepipe.locks <git revision> [dvc.lock]   # the lock at that revision against the working one
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml


def output_hashes(lock_text: str) -> dict[str, str]:
    """`stage: path` -> md5 of every output a dvc.lock records (a folder's md5 is its `.dir` listing's)."""
    lock = yaml.safe_load(lock_text) or {}
    return {f"{stage}: {out['path']}": out.get("md5", "")
            for stage, entry in (lock.get("stages") or {}).items() for out in entry.get("outs") or []}


def differences(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """One line per output whose hash changed, or that only one of the two locks has."""
    lines = [f"changed  {key}: {before[key]} -> {after[key]}" for key in sorted(before.keys() & after.keys())
             if before[key] != after[key]]
    lines += [f"only before  {key}" for key in sorted(before.keys() - after.keys())]
    lines += [f"only after   {key}" for key in sorted(after.keys() - before.keys())]
    return lines


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print("usage: python -m tunepipe.locks <git revision> [dvc.lock]", file=sys.stderr)
        return 2
    path = Path(argv[1] if len(argv) > 1 else "dvc.lock")
    old = subprocess.run(["git", "show", f"{argv[0]}:{path.as_posix()}"], capture_output=True, text=True)
    if old.returncode:
        print(f"error: {old.stderr.strip()}", file=sys.stderr)
        return 2
    before, after = output_hashes(old.stdout), output_hashes(path.read_text(encoding="utf-8"))
    found = differences(before, after)
    print("\n".join(found) if found else f"{len(after)} outputs, every md5 as at {argv[0]}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
