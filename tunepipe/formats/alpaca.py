"""Alpaca: instruction, input (optional), output, and optionally system and history (earlier turns).

A JSON array or JSON lines (also CSV, TSV or Parquet with these columns), the format of Stanford Alpaca and
of LLaMA-Factory's `alpaca` datasets. A row with `history` ([[user, assistant], ...]) becomes a multi-turn
chat record whose last turn is the instruction (and input) with its output; a row without is one
instruction record. `columns` renames fields, as LLaMA-Factory's dataset_info.json does
(`columns: {instruction: prompt, input: query, output: response}`). `labels` is not taken: use `table`
for classification.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from tunepipe.ledger import Ledger
from tunepipe.formats.rows import checked_messages, column, records_of, text_of, unread_meaning

OPTIONS = {"columns": {}}
FIELDS = ("instruction", "input", "output", "system", "history", "id")


def to_record(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    instruction = text_of(column(row, columns, "instruction"), "instruction")
    extra = column(row, columns, "input") or ""
    output = text_of(column(row, columns, "output"), "output")
    system = column(row, columns, "system")
    if system is not None and not isinstance(system, str):
        raise ValueError(f"system is a {type(system).__name__}, not text")
    history = column(row, columns, "history")
    if not history:
        record = {"kind": "instruction", "instruction": instruction, "input": str(extra), "output": output}
        return {**record, "system": system} if system else record
    if not isinstance(history, list) or not all(isinstance(t, (list, tuple)) and len(t) == 2 for t in history):
        raise ValueError("history: expected a list of [user, assistant] pairs")
    turns = [{"role": "system", "content": system}] if system else []
    for user, assistant in history:
        turns += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    question = f"{instruction}\n\n{extra}".strip() if extra else instruction
    turns += [{"role": "user", "content": question}, {"role": "assistant", "content": output}]
    return {"kind": "chat", "messages": checked_messages(turns, "history")}


def read(raw_dir: Path, options: dict[str, Any], ledger: Ledger) -> Iterator[dict[str, Any]]:
    columns = {**OPTIONS["columns"], **(options.get("columns") or {})}

    def checked(row: dict[str, Any]) -> dict[str, Any]:
        unread_meaning(row, "alpaca")
        return to_record(row, columns)

    return records_of(raw_dir, ledger, columns, checked)
