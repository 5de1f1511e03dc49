"""Collins word-sense records: JSON lines -> 'what does this word mean here' instruction rows.

Raw: one {"id", "data_name", "ex_id": "word!@!pos!@!sense!@!example", "question", "answer"} per line, where
answer is the definition of that sense. Some records give "word" and "context" (or "example"), and
optionally "pos" and "sense", as fields instead of ex_id; the row is the same either way.

Decisions, each checked in tests/formats/test_collins.py:
- The instruction is rebuilt from word and context with one template, so every row asks the same way;
  the raw `question` is not used. When a record has both ex_id and word fields, ex_id wins.
- ex_id must split into exactly 4 parts on "!@!": with 5, nobody can tell which part holds the extra.
- A word not found in its context (whole words, case-insensitive) is KEPT, flagged word_in_context: false.
  Collins examples often use an inflected form (run -> ran, bright -> brighter) that a plain match
  misses, so rejecting would drop good rows; `require_word_in_context: true` rejects them instead.
- Ids are stringified (7 -> "7"); a repeated id is rejected here, with its line, and the first one kept.
- A bad line is one reject (a truncated download loses only its last line). An empty file, or a file that
  is one JSON array instead of JSON lines, raises StageError: nothing in it can be read as lines.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from tunepipe.errors import StageError
from tunepipe.ledger import Ledger

OPTIONS = {
    "instruction_template": '"{context}" What does the word "{word}" mean in this context?',
    "require_word_in_context": False,  # true: reject a row whose word is not in its context (see above)
}
SEPARATOR = "!@!"
SPLITS = {"train": "train", "dev": "validation", "val": "validation", "validation": "validation", "test": "test"}


def options_of(options: dict[str, Any]) -> dict[str, Any]:
    """Defaults + checked overrides: a typo or a bad value stops the stage before any work."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise StageError(f"collins options: unknown {unknown} (known: {', '.join(sorted(OPTIONS))})")
    opts = {**OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    try:
        opts["instruction_template"].format(context="", word="")
    except (KeyError, IndexError, ValueError, AttributeError) as err:
        raise StageError(f"collins options: instruction_template may use only {{context}} and {{word}} ({err!r})")
    if not isinstance(opts["require_word_in_context"], bool):
        raise StageError("collins options: require_word_in_context must be true or false")
    return opts


def split_of(path: Path) -> str | None:
    """collins.dev.jsonl -> validation; a file that names no split leaves it to convert."""
    return next((SPLITS[part] for part in re.split(r"[._-]", path.name.lower()) if part in SPLITS), None)


def text(value: Any, field: str, required: bool = True) -> str:
    """The stripped string (numbers allowed for pos/sense), or ValueError carrying the reject reason."""
    if value is None:
        if required:
            raise ValueError(f"missing field: {field}")
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and not required:
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"wrong type: {field} is {type(value).__name__}, expected a string")
    if required and not value.strip():
        raise ValueError(f"empty text: {field}")
    return value.strip()


def parts_of(row: dict[str, Any]) -> tuple[str, str, str, str]:
    """(word, pos, sense, context) from ex_id, or from separate fields when there is no ex_id."""
    if row.get("ex_id") is not None:
        ex_id = text(row["ex_id"], "ex_id")
        parts = ex_id.split(SEPARATOR)
        if len(parts) != 4:
            raise ValueError(f"malformed ex_id: expected word!@!pos!@!sense!@!example, got {len(parts)} parts")
        word, pos, sense, context = (part.strip() for part in parts)
        if not word or not context:
            raise ValueError(f"empty text: {'word' if not word else 'example'} in ex_id")
        return word, pos, sense, context
    if row.get("word") is None:
        raise ValueError("missing field: ex_id (or word and context)")
    context_field = "context" if row.get("context") is not None else "example"
    return (text(row.get("word"), "word"), text(row.get("pos"), "pos", required=False),
            text(row.get("sense"), "sense", required=False), text(row.get(context_field), context_field))


def to_record(line: str, opts: dict[str, Any], split: str | None) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"malformed JSON: {err.msg} (column {err.colno})") from None
    if not isinstance(row, dict):
        raise ValueError(f"wrong type: line is {type(row).__name__}, expected an object")
    rid = row.get("id")
    if rid is None:
        raise ValueError("missing field: id")
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise ValueError(f"wrong type: id is {type(rid).__name__}, expected a string or an integer")
    rid = text(str(rid), "id")
    word, pos, sense, context = parts_of(row)
    answer = text(row.get("answer"), "answer")
    # whole words only, so "art" is not found in "start"; case-insensitive, so "Bank" matches "bank"
    in_context = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", context, re.IGNORECASE) is not None
    if not in_context and opts["require_word_in_context"]:
        raise ValueError(f"word not in context: {word!r} (require_word_in_context is on)")
    record = {"id": rid, "kind": "instruction",
              "instruction": opts["instruction_template"].format(context=context, word=word),
              "input": "", "output": answer, "word": word, "pos": pos, "sense": sense,
              "word_in_context": in_context,
              "data_name": row["data_name"] if isinstance(row.get("data_name"), str) else None}
    if split:
        record["split"] = split
    return record


def read(raw_dir: Path, options: dict[str, Any], ledger: Ledger) -> Iterator[dict[str, Any]]:
    opts = options_of(options)
    files = sorted(p for p in Path(raw_dir).rglob("*") if p.is_file() and p.suffix in {".jsonl", ".json"})
    if not files:
        raise StageError(f"{raw_dir}: no Collins .jsonl files")
    seen: set[str] = set()
    for path in files:
        data = path.read_bytes()
        if not data.strip():
            raise StageError(f"{path}: empty file (a broken download?)")
        if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
            raise StageError(f"{path}: one JSON array; expected JSON lines (one record object per line)")
        split = split_of(path)
        for number, raw in enumerate(data.splitlines(), start=1):  # bytes: split on \n and \r only
            if not raw.strip():
                continue
            where = f"{path.name}:{number}"
            ledger.read += 1
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                ledger.reject(where, f"wrong encoding: not UTF-8 at byte {err.start} (GBK?)",
                              raw.decode("utf-8", "backslashreplace"))
                continue
            try:
                record = to_record(line, opts, split)
                if record["id"] in seen:
                    raise ValueError(f"duplicate id: {record['id']} seen before")
            except ValueError as err:
                ledger.reject(where, str(err), line)
                continue
            seen.add(record["id"])
            yield record
