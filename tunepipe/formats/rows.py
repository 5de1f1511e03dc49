"""Rows of a user's own files, for the generic readers (alpaca, sharegpt, messages, text, table).

Reads every .jsonl, .json, .csv, .tsv and .parquet file under the raw folder, sorted by path, as dict rows,
each with the place it came from ('file:line', or 'file#row' for Parquet and JSON arrays) for the rejects
file (a CSV may quote fields; a TSV quotes nothing, as GLUE's files do). A line that is not valid JSON, a
CSV row with the wrong number of fields, or bytes that are not UTF-8
reject that row only; a .json file that does not parse is refused whole (it is one value: nothing in it can
be trusted), and so is a folder with no readable file. A file whose name says its split (train, dev,
validation, val, test: `train.jsonl`, `test-00000-of-00001.parquet`) puts its rows in that split.

A row's id is a hash of its content, so splits stay put when rows are added, removed or reordered; a row
that repeats another exactly is dropped as a duplicate (kept in the rejects file, with the place of the one kept).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any, Iterator

from tunepipe.errors import StageError
from tunepipe.ledger import Ledger

SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
SPLIT_NAMES = {"train": "train", "dev": "validation", "validation": "validation", "val": "validation",
               "valid": "validation", "test": "test"}


def split_of(path: Path) -> str | None:
    """The split a file's name says: `train.jsonl`, `data/test-00000-of-00001.parquet`, `my.dev.csv`."""
    for part in re.split(r"[^a-z]+", path.stem.lower()):
        if part in SPLIT_NAMES:
            return SPLIT_NAMES[part]
    return None


def data_files(raw_dir: Path, suffixes: tuple[str, ...] = SUFFIXES) -> list[Path]:
    files = sorted(p for p in Path(raw_dir).rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                   and not any(part.startswith(".") for part in p.relative_to(raw_dir).parts))
    if not files:
        found = sorted(p.name for p in Path(raw_dir).rglob("*") if p.is_file())[:10]
        raise StageError(f"{raw_dir}: no {', '.join(suffixes)} file to read (found: {found or 'nothing'})")
    return files


def content_id(row: Any) -> str:
    text = json.dumps(row, ensure_ascii=False, sort_keys=True, default=str)
    return "r" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _jsonl(path: Path, name: str, ledger: Ledger) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            ledger.read += 1
            where = f"{name}:{number}"
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                ledger.reject(where, f"not UTF-8: byte {raw[err.start]:#x} at column {err.start + 1}",
                              raw.decode("utf-8", "replace"))
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as err:
                ledger.reject(where, f"malformed JSON: {err.msg} (column {err.colno})", line)


def _json(path: Path, name: str, ledger: Ledger) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        raise StageError(f"{name}: not UTF-8 (byte {err.start}); a .json file is one value, so none of it "
                         "can be read") from None
    except json.JSONDecodeError as err:
        raise StageError(f"{name}:{err.lineno}: malformed JSON ({err.msg}, column {err.colno}); a .json file "
                         "is one value, so none of it can be read (JSON lines, .jsonl, reject bad lines only)") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]}, as some releases wrap their rows
    if not isinstance(data, list):
        raise StageError(f"{name}: expected a JSON array of rows, got a {type(data).__name__}")
    for index, row in enumerate(data):
        ledger.read += 1
        yield f"{name}#{index}", row


def _table(path: Path, name: str, ledger: Ledger, delimiter: str) -> Iterator[tuple[str, Any]]:
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    # a tab-separated file (GLUE's, for one) quotes nothing: a " inside a sentence is part of it
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter,
                        quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
    try:
        header = next(reader)
    except StopIteration:
        return
    start = reader.line_num + 1
    for fields in reader:
        where, start = f"{name}:{start}", reader.line_num + 1
        if not any(field.strip() for field in fields):
            continue
        ledger.read += 1
        raw = delimiter.join(fields)
        if any("\udc80" <= char <= "\udcff" for field in fields for char in field):
            ledger.reject(where, "not UTF-8", raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        elif len(fields) != len(header):
            ledger.reject(where, f"{len(fields)} fields, the header has {len(header)}", raw)
        else:
            yield where, dict(zip(header, fields))


def _parquet(path: Path, name: str, ledger: Ledger) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid / OSError for a file that is not Parquet
        raise StageError(f"{name}: not a readable Parquet file ({str(err).splitlines()[0][:160]})") from None
    index = 0
    for batch in table.iter_batches(batch_size=1000):
        for row in batch.to_pylist():
            ledger.read += 1
            yield f"{name}#{index}", row
            index += 1


def iter_rows(raw_dir: Path, ledger: Ledger, suffixes: tuple[str, ...] = SUFFIXES
              ) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """(where, row, split the file name says) for every row of every data file; non-object rows rejected."""
    for path in data_files(raw_dir, suffixes):
        name = path.relative_to(raw_dir).as_posix()
        suffix = path.suffix.lower()
        rows = (_jsonl(path, name, ledger) if suffix == ".jsonl" else _json(path, name, ledger) if suffix == ".json"
                else _parquet(path, name, ledger) if suffix == ".parquet"
                else _table(path, name, ledger, "\t" if suffix == ".tsv" else ","))
        for where, row in rows:
            if not isinstance(row, dict):
                ledger.reject(where, f"malformed record: expected an object, got {type(row).__name__}", row)
            else:
                yield where, row, split_of(path)


class Seen:
    """Drops a row whose content repeats one already kept (the same content hash), saying which one it
    repeats; a repeated id of the file's own (an `id` column) is bad input, and rejected."""

    def __init__(self, ledger: Ledger):
        self.ledger, self.first = ledger, {}

    def new(self, record_id: str, where: str, raw: Any, own_id: bool = False) -> bool:
        if record_id in self.first:
            if own_id:
                self.ledger.reject(where, f"duplicate id {record_id!r} (first at {self.first[record_id]})", raw)
            else:
                self.ledger.drop(where, f"duplicate: the same content as {self.first[record_id]}", raw)
            return False
        self.first[record_id] = where
        return True


def records_of(raw_dir: Path, ledger: Ledger, columns: dict[str, str], to_record) -> Iterator[dict[str, Any]]:
    """Every row through `to_record` (which raises ValueError with the reason for a bad one, then kept in the
    rejects), with its id and the split its file's name says; repeats dropped."""
    seen = Seen(ledger)
    for where, row, split in iter_rows(raw_dir, ledger):
        try:
            record = to_record(row)
        except ValueError as err:
            ledger.reject(where, str(err), row)
            continue
        record["id"], own = record_id(row, columns, record)
        if seen.new(record["id"], where, row, own):
            yield {**record, **({"split": split} if split else {})}


def record_id(row: dict[str, Any], columns: dict[str, str], record: dict[str, Any]) -> tuple[str, bool]:
    """(id, whether it is the file's own): an `id` column's value, else a hash of the record's content."""
    own = column(row, columns, "id")
    return (str(own), True) if own not in (None, "") else (content_id(record), False)


def column(row: dict[str, Any], columns: dict[str, str], field: str) -> Any:
    """A field of a row through the reader's column mapping (its own name when the mapping has none)."""
    return row.get(columns.get(field, field))


def text_of(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"missing field: {field}" if value is None else f"empty text: {field}"
                         if isinstance(value, str) else f"{field} is a {type(value).__name__}, not text")
    return value


ROLES = ("system", "user", "assistant")
# columns that change what a row means: a reader that does not read them refuses the row rather than drop them
MEANINGFUL = {"label": "it marks the row's answer desirable or not (KTO data: format preference)",
              "chosen": "it makes the row a preference pair (format: preference)",
              "rejected": "it makes the row a preference pair (format: preference)",
              "tools": "the prompt would lose the tools it offers the model (tool use is not supported)"}


def unread_meaning(row: dict[str, Any], fmt: str) -> None:
    """Refuse a row with a column this format does not read but which says what the row is."""
    for name, meaning in MEANINGFUL.items():
        if row.get(name) not in (None, "", []):  # LLaMA-Factory writes an empty `tools` where there are none
            raise ValueError(f"column {name!r} is not read by format {fmt}, and {meaning}")


def text_parts(parts: list, where: str) -> str:
    """Content parts as text: OpenAI's {type: text, text} and LLaMA-Factory v1's {type: text, value}."""
    texts = []
    for part in parts:
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ValueError(f"{where}: only text content is supported (a {kind!r} part)")
        if not isinstance(part.get("text", part.get("value")), str):
            raise ValueError(f"{where}: a text part has neither 'text' nor 'value' (keys: {', '.join(sorted(part))})")
        texts.append(part.get("text", part.get("value")))
    return "".join(texts)


def checked_messages(messages: Any, what: str = "messages") -> list[dict[str, str]]:
    """A conversation as [{role, content}], checked: an optional system turn first, then user and assistant
    turns alternating, starting with the user and ending with the assistant (the answer a model learns)."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"missing field: {what}" if messages is None else f"{what}: expected a non-empty list")
    checked = []
    for number, turn in enumerate(messages, start=1):
        if not isinstance(turn, dict):
            raise ValueError(f"{what} turn {number}: expected an object, got {type(turn).__name__}")
        role, content = turn.get("role"), turn.get("content")
        weight = turn.get("loss_weight")  # LLaMA-Factory v1: whether a turn is learnt
        if weight is not None and weight != (1 if role == "assistant" else 0):
            raise ValueError(f"{what} turn {number}: loss_weight {weight} on the {role}'s turn: only the usual "
                             "weights are read (1 on the assistant's turns, 0 on the others)")
        if isinstance(content, list):
            content = text_parts(content, f"{what} turn {number}")
        if role not in ROLES:
            raise ValueError(f"{what} turn {number}: role {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"{what} turn {number}: empty content")
        checked.append({"role": role, "content": content})
    turns = checked[1:] if checked[0]["role"] == "system" else checked
    for number, turn in enumerate(turns):
        expected = "user" if number % 2 == 0 else "assistant"
        if turn["role"] != expected:
            place = number + 1 + (len(checked) - len(turns))
            raise ValueError(f"{what} turn {place}: {turn['role']} where the {expected} speaks (a system turn may "
                             "only open; user and assistant alternate)")
    if not turns or turns[-1]["role"] != "assistant":
        raise ValueError(f"{what}: the last turn must be the assistant's (the answer to learn)")
    return checked
