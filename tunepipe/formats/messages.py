"""OpenAI / TRL conversational rows: {"messages": [{"role": "system"|"user"|"assistant", "content": ...}]}.

JSON lines or a JSON array (also Parquet). A conversation may open with a system turn; user and assistant
then alternate, and the last turn is the assistant's. Content given as a list of parts keeps its text
parts; any other part (an image) rejects the row, as does a tool turn. `columns` renames the field
(`columns: {messages: conversation}`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from tunepipe.ledger import Ledger
from tunepipe.formats.rows import checked_messages, column, records_of, unread_meaning

OPTIONS = {"columns": {}}


def read(raw_dir: Path, options: dict[str, Any], ledger: Ledger) -> Iterator[dict[str, Any]]:
    columns = options.get("columns") or {}

    def to_record(row: dict[str, Any]) -> dict[str, Any]:
        unread_meaning(row, "messages")
        return {"kind": "chat", "messages": checked_messages(column(row, columns, "messages"))}

    return records_of(raw_dir, ledger, columns, to_record)
