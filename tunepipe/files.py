"""Atomic outputs (a killed stage leaves nothing that looks done), our own JSON and jsonl, file hashes."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from tunepipe.errors import StageError

UMASK = os.umask(0o022)
os.umask(UMASK)  # read the process umask (the call sets it, so set it straight back)


def temporary_prefix(final: Path) -> str:
    """The name prefix of `final`'s temporary sibling, carrying the writer's pid. A writer killed outright
    (SIGKILL, out of memory) cannot clean up after itself, so each new write of `final` first removes the
    siblings whose writer is gone; a live writer's (another process writing the same output) is left be."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{glob.escape(final.name)}.tmp-*"):
        pid = stale.name[len(final.name) + 6:].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    return f".{final.name}.tmp-{os.getpid()}-"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


@contextlib.contextmanager
def atomic_dir(final: Path | str) -> Iterator[Path]:
    """Yield an empty temporary directory beside `final`; on success it replaces `final` in one rename."""
    final = Path(final)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(final), dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes 0700; an output folder gets the usual mode
        if final.exists():
            shutil.rmtree(final) if final.is_dir() and not final.is_symlink() else final.unlink()
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: Path | str, mode: str = "w") -> Iterator[Any]:
    final = Path(final)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(final), dir=final.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding, newline=None if "b" in mode else "\n") as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; an output file gets the usual mode
        if final.is_symlink():  # DVC may link outputs into its cache: never write through the link
            final.unlink()
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def json_line(row: dict[str, Any]) -> str:
    # ensure_ascii=False keeps Chinese readable; fixed separators keep bytes stable across versions
    return json.dumps(row, ensure_ascii=False, separators=(", ", ": ")) + "\n"


def write_jsonl(path: Path | str, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    with atomic_file(path) as handle:
        for row in rows:
            handle.write(json_line(row))
            count += 1
    return count


def iter_jsonl(path: Path | str) -> Iterator[dict[str, Any]]:
    """Stream our own jsonl outputs (trusted) row by row; raw inputs go through the format readers instead."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise StageError(f"{path}:{number}: not valid JSON ({err.msg})") from None


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


def write_json(path: Path | str, data: Any) -> None:
    with atomic_file(path) as handle:
        handle.write(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
