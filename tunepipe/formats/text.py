"""Plain text for completion training: .txt / .md files (one document each) or rows with a `text` field.

A causal language model learns every token of a document (no prompt to mask); documents longer than
`tokenize.max_length` are cut into consecutive pieces of that length rather than left out. Rows come from
JSON lines, JSON, CSV, TSV or Parquet (`columns: {text: body}` names the field); a .txt or .md file is one
document, read as UTF-8 (a file that is not is rejected whole, with its name). Scored by `perplexity`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from tunepipe.errors import StageError
from tunepipe.ledger import Ledger
from tunepipe.formats.rows import Seen, SUFFIXES, column, content_id, iter_rows, record_id, split_of, text_of

OPTIONS = {"columns": {}}
DOCUMENTS = (".txt", ".md")


def read(raw_dir: Path, options: dict[str, Any], ledger: Ledger) -> Iterator[dict[str, Any]]:
    columns = options.get("columns") or {}
    seen = Seen(ledger)
    documents = sorted(p for p in Path(raw_dir).rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENTS)
    for path in documents:
        ledger.read += 1
        where = path.relative_to(raw_dir).as_posix()
        try:
            text = text_of(path.read_text(encoding="utf-8"), "text")
        except (UnicodeDecodeError, ValueError) as err:
            reason = "not UTF-8" if isinstance(err, UnicodeDecodeError) else str(err)
            ledger.reject(where, reason, path.read_bytes()[:1000].decode("utf-8", "replace"))
            continue
        record = {"id": content_id({"kind": "text", "text": text}), "kind": "text", "text": text}
        if seen.new(record["id"], where, None):
            yield {**record, **({"split": split_of(path)} if split_of(path) else {})}
    tables = [p for p in Path(raw_dir).rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES]
    if not tables:
        if not documents:
            raise StageError(f"{raw_dir}: no .txt, .md or {', '.join(SUFFIXES)} file to read")
        return
    for where, row, split in iter_rows(raw_dir, ledger):
        try:
            text = text_of(column(row, columns, "text"), "text")
        except ValueError as err:
            ledger.reject(where, str(err), row)
            continue
        record = {"kind": "text", "text": text}
        record["id"], own = record_id(row, columns, record)
        if seen.new(record["id"], where, row, own):
            yield {**record, **({"split": split} if split else {})}
