"""DialogSum: JSON lines (fname, dialogue, summary | summary1..3, topic) or the 2021 Python-dict release.

The 2021 release of train has one Python dict literal per line (single quotes), which is not JSON; it is
parsed with `ast.literal_eval`, which reads literals only and never runs code.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Iterator

from tunepipe.errors import StageError
from tunepipe.ledger import Ledger

OPTIONS: dict = {}  # takes none
INSTRUCTION = "Summarize the following dialogue."
SPLIT_BY_NAME = {"train": "train", "dev": "validation", "validation": "validation", "test": "test"}


def split_of(path: Path) -> str | None:
    """dialogsum.dev.jsonl -> validation; the release names its split in the file name."""
    for part in path.name.split("."):
        if part in SPLIT_BY_NAME:
            return SPLIT_BY_NAME[part]
    return None


def parse_line(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as json_error:
        if line.lstrip().startswith("{'") or line.lstrip().startswith('{"'):
            try:
                return ast.literal_eval(line)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                pass
        raise ValueError(f"malformed JSON: {json_error.msg} (column {json_error.colno})") from None


def to_record(row: Any, split: str | None) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError(f"malformed record: expected an object, got {type(row).__name__}")
    fname, dialogue = row.get("fname"), row.get("dialogue")
    if not isinstance(fname, str) or not fname.strip():
        raise ValueError("missing field: fname")
    if not isinstance(dialogue, str) or not dialogue.strip():
        raise ValueError("empty text: dialogue")
    # test rows carry three reference summaries (summary1..3); keep all of them
    keys = ["summary"] if "summary" in row else sorted(k for k in row if k.startswith("summary"))
    summaries = [row[k] for k in keys]
    if not summaries:
        raise ValueError("missing field: summary")
    if not all(isinstance(s, str) and s.strip() for s in summaries):
        raise ValueError("empty text: summary")
    record = {"id": fname.strip(), "kind": "instruction", "instruction": INSTRUCTION,
              "input": dialogue.strip(), "output": summaries[0].strip()}
    if len(summaries) > 1:
        record["references"] = [s.strip() for s in summaries]
    if split:
        record["split"] = split
    return record


def read(raw_dir: Path, options: dict[str, Any], ledger: Ledger) -> Iterator[dict[str, Any]]:
    files = sorted(p for p in Path(raw_dir).rglob("*") if p.is_file() and p.suffix in {".jsonl", ".json"})
    if not files:
        raise StageError(f"{raw_dir}: no DialogSum .jsonl files")
    for path in files:
        split = split_of(path)
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                where = f"{path.name}:{number}"
                if not raw.strip():
                    continue
                ledger.read += 1
                try:
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    ledger.reject(where, f"wrong encoding: not UTF-8 at byte {err.start}",
                                  raw.decode("latin-1"))
                    continue
                try:
                    yield to_record(parse_line(line.rstrip("\r\n")), split)
                except ValueError as err:
                    ledger.reject(where, str(err), line.rstrip("\n"))
