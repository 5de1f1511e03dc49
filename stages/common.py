"""What every stage shares: its params group, atomic outputs, jsonl, the reject ledger, clean errors.

No stage imports Prefect or DVC: a stage is a plain `python -m stages.<name> <item>` that DVC runs.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import yaml

PARAMS_FILE = Path("params.yaml")
CODE_ROOT = Path(__file__).resolve().parents[1]  # the repository: stages/, metrics/, defaults/
UMASK = os.umask(0o022)
os.umask(UMASK)  # read the process umask (the call sets it, so set it straight back)
COMMIT = re.compile(r"^[0-9a-f]{40}$")  # a hub revision pinned to one commit


class StageError(Exception):
    """A problem the user can fix (bad input, bad params, no network). Printed as one line, no traceback."""


# EX_TEMPFAIL from sysexits.h: the stage failed in a way a later try may not (a download timed out), so the
# Prefect flow retries it; every other failure exits 2 and is final.
TRANSIENT_EXIT = 75


class TransientError(StageError):
    """A failure that may pass on a later try: a network timeout, a server error, a dropped connection."""


PROFILE = ""  # the profile folder a stage works in ("" for the repository root), set by run_stage


def run_stage(main: Callable[[list[str]], None], timed: bool = True) -> None:
    """Entry point wrapper: a StageError becomes one clear line on stderr and exit status 2 (TRANSIENT_EXIT for
    a TransientError). `--profile FOLDER` runs the stage inside a profile's folder (its params.yaml,
    experiments/ and outputs), though DVC starts it from the repository root so that it imports this code.
    A stage that succeeds leaves its wall time in reports/speed/stages/ (out of git and DVC: it differs on
    every run), which the cache benchmark sums into the cost of a cold run."""
    global PROFILE
    started = time.perf_counter()
    argv = sys.argv[1:]
    if "--profile" in argv:
        at = argv.index("--profile")
        if at + 1 >= len(argv) or not Path(argv[at + 1]).is_dir():
            print(f"error: --profile needs a profile folder, got {argv[at + 1:at + 2] or 'nothing'}", file=sys.stderr)
            sys.exit(2)
        PROFILE = argv[at + 1].rstrip("/")
        os.chdir(PROFILE)
        argv = argv[:at] + argv[at + 2:]
    try:
        main(argv)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(TRANSIENT_EXIT if isinstance(err, TransientError) else 2)
    if not timed:
        return
    name = "@".join([Path(sys.argv[0]).stem, *(["+".join(argv)] if argv else [])])  # predict@x+after
    write_json(Path("reports/speed/stages") / f"{name}.json",
               {"seconds": round(time.perf_counter() - started, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})


def one_item(argv: list[str], stage: str) -> str:
    if len(argv) != 1:
        raise StageError(f"usage: python -m stages.{stage} <item>  (an entry of params.yaml '{stage}')")
    return argv[0]


def load_params(group: str, item: str | None = None, path: Path = PARAMS_FILE,
                required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read params.yaml[group] (or [group][item]); a missing entry or required key names file and key."""
    if not path.exists():
        raise StageError(f"{path}: not found (run stages from the repository root)")
    params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if group not in params:
        raise StageError(f"{path}: no '{group}' group")
    section = params[group]
    if item is None:
        return section
    if not isinstance(section, dict) or item not in section:
        known = ", ".join(sorted(section)) if isinstance(section, dict) else "none"
        raise StageError(f"{path}: '{group}' has no entry '{item}' (known: {known})")
    require_keys(section[item], f"{path} {group}.{item}", *required)
    return section[item]


def require(params: dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(params, dict) or params.get(key) is None:
        raise StageError(f"{where}: missing required key '{key}'")
    return params[key]


def require_keys(params: dict[str, Any], where: str, *keys: str) -> None:
    missing = [key for key in keys if not isinstance(params, dict) or params.get(key) is None]
    if missing:
        raise StageError(f"{where}: missing required key{'s' * (len(missing) > 1)} {', '.join(missing)}")


def read_labels(setup: dict[str, Any]) -> list[str]:
    """The dataset's label order (data/converted/<dataset>/labels.json); a head needs one."""
    path = Path("data/converted") / setup["dataset"] / "labels.json"
    if not path.exists():
        raise StageError(f"{path}: not found (run dvc repro convert@{setup['dataset']})")
    labels = json.loads(path.read_text(encoding="utf-8"))
    if setup["kind"] in ("token_head", "sequence_head") and not labels:
        raise StageError(f"params.yaml experiments.{setup['name']}: a {setup['kind']} needs labelled data, "
                         f"but dataset '{setup['dataset']}' has no labels ({path} is empty)")
    return labels


# --- atomic outputs: a killed stage leaves nothing that looks done ---------------------------------------

@contextlib.contextmanager
def atomic_dir(final: Path | str) -> Iterator[Path]:
    """Yield an empty temporary directory beside `final`; on success it replaces `final` in one rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
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
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
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


PART = "#part"  # a piece of a long plain-text document, as tokenize cuts it: <record id>#part<k>


def source_id(row_id: str) -> str:
    """The converted record a tokenized row came from (a piece of a long document carries #part<k>)."""
    head, sep, tail = row_id.rpartition(PART)
    return head if sep and tail.isdigit() else row_id


# --- deterministic choices ------------------------------------------------------------------------------

def stable_fraction(key: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by `key` alone: the same on every run, machine and Python version."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def stable_choice(key: str, options: list[Any], salt: str = "") -> tuple[int, Any]:
    index = int(stable_fraction(key, salt) * len(options))
    return index, options[index]


def split_for(key: str, ratios: dict[str, float], salt: str = "split") -> str:
    """Assign an example to a split by the hash of its id, so adding rows never moves existing ones."""
    total = sum(ratios.values())
    if total <= 0:
        raise StageError(f"split ratios must add up to more than 0, got {ratios}")
    point = stable_fraction(key, salt) * total
    for name, share in ratios.items():
        if point < share:
            return name
        point -= share
    return list(ratios)[-1]


# --- the ledger: every input record ends in the output or in the rejects file ----------------------------

REJECT_KEEP_CHARS = 100_000


class Ledger:
    """Counts records read, written, rejected and dropped, and keeps every record not written with its place.

    rejected: bad input (counts toward the reject-rate limit). dropped: good input left out on purpose, such
    as rows down-sampled to reach a class ratio (kept with its reason, not an error). synthesized: rows made
    by the converter with no raw record behind them. The books balance when
    read + synthesized = written + rejected + dropped.
    """

    def __init__(self, name: str):
        self.name = name
        self.read = 0
        self.synthesized = 0
        self.written = Counter()  # by split
        self.rejected: list[dict[str, Any]] = []
        self.dropped: list[dict[str, Any]] = []

    def reject(self, where: str, reason: str, record: Any = None) -> None:
        """`where` is 'file:line' or 'file#id' and the raw record is kept, so nothing is lost.

        A raw line past REJECT_KEEP_CHARS (a 50 MB garbage line) keeps its start and says how long it
        was; `where` still points at the whole of it in the raw file.
        """
        entry = {"where": where, "reason": reason, "record": record}
        if isinstance(record, str) and len(record) > REJECT_KEEP_CHARS:
            entry.update(record=record[:REJECT_KEEP_CHARS], truncated_from_chars=len(record))
        self.rejected.append(entry)

    def drop(self, where: str, reason: str, record: Any = None) -> None:
        self.dropped.append({"where": where, "reason": reason, "record": record, "dropped": True})

    def reasons(self, entries: list[dict[str, Any]] | None = None) -> dict[str, int]:
        entries = self.rejected if entries is None else entries
        return dict(sorted(Counter(r["reason"].split(":")[0] for r in entries).items()))

    def summary(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "synthesized": self.synthesized,
            "written": sum(self.written.values()),
            "written_by_split": dict(sorted(self.written.items())),
            "rejected": len(self.rejected),
            "rejected_by_reason": self.reasons(),
            "dropped": len(self.dropped),
            "dropped_by_reason": self.reasons(self.dropped),
        }

    def check(self, max_reject_rate: float, max_drop_rate: float = 0.5) -> None:
        """Print the ledger; fail when records went missing, the reject rate passes its threshold, or options
        would leave out (drop) more than `max_drop_rate` of the good input: no default should discard most
        of a user's data quietly."""
        info = self.summary()
        extra = f" + synthesized {info['synthesized']}" if info["synthesized"] else ""
        dropped = f", dropped {info['dropped']} {info['dropped_by_reason']}" if info["dropped"] else ""
        print(f"[{self.name}] read {info['read']}{extra}, written {info['written']} {info['written_by_split']}, "
              f"rejected {info['rejected']} {info['rejected_by_reason']}{dropped}")
        if info["read"] + info["synthesized"] != info["written"] + info["rejected"] + info["dropped"]:
            raise StageError(f"{self.name}: ledger does not balance: read {info['read']} + synthesized "
                             f"{info['synthesized']} != written {info['written']} + rejected {info['rejected']} "
                             f"+ dropped {info['dropped']}")
        rate = info["rejected"] / info["read"] if info["read"] else 0.0
        if rate > max_reject_rate:
            first = self.rejected[0]
            raise StageError(f"{self.name}: {rate:.1%} of records rejected (limit {max_reject_rate:.1%}); "
                             f"first: {first['where']}: {first['reason']}")
        good = info["read"] + info["synthesized"] - info["rejected"]
        dropped = info["dropped"] / good if good else 0.0
        if dropped > max_drop_rate:
            raise StageError(f"{self.name}: the options leave out {info['dropped']} of {good} good records "
                             f"({dropped:.0%}, limit max_drop_rate {max_drop_rate:.0%}): {self.dropped[0]['reason']}; "
                             f"change the options or raise max_drop_rate (every dropped record is in the rejects file)")


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pin_threads(threads: int) -> None:
    """Weights differ with the number of torch threads: pin it so results are the same bytes every run."""
    import torch

    torch.set_num_threads(int(threads))


def require_hub(what: str, offline_hint: str) -> None:
    """Fail in seconds with one line when the Hugging Face Hub cannot be reached.

    The hub client itself retries with back-off for ~25 s and logs each retry; checking the endpoint first
    gives the user one clear line instead. Timeouts are short because a reachable hub answers at once.
    """
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}:
        raise StageError(f"cannot fetch {what}: HF_HUB_OFFLINE is set. {offline_hint}")
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as err:
        raise StageError(f"cannot reach {host}:{port} to fetch {what} ({err.strerror or err}). {offline_hint}") from None
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
