"""Tables of labelled rows, sentence pairs, tagged tokens or instructions: CSV, TSV, JSON lines, JSON, Parquet.

`columns` maps this project's fields to the file's columns (a field whose column has its own name needs no
entry, so a CSV with a `text,label` header needs no options at all). What a row is follows from the fields
mapped or present:
- tokens + tags  -> a tokens row (NER): lists, or strings split on whitespace; as many tags as tokens
- text + label   -> a labelled row (classification); with text_pair, a sentence pair
- output (+ instruction and/or input) -> an instruction row
`labels` fixes the label order of a head and rejects rows with any other label; without it the order is
the labels found, sorted. An `id` column keeps the file's own ids; otherwise a row's id is a hash of its
content (tunepipe/formats/rows.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from tunepipe.errors import StageError
from tunepipe.ledger import Ledger
from tunepipe.formats.rows import column, records_of, text_of

OPTIONS = {"columns": {}, "labels": None}
SHAPES = {"tokens": ("tokens", "tags"), "labelled": ("text", "label"), "instruction": ("output",)}


def shape_of(row: dict[str, Any], columns: dict[str, str]) -> str:
    for kind, needed in SHAPES.items():
        if all(field in columns or field in row for field in needed):
            return kind
    raise StageError(f"a table row needs columns for tokens + tags, text + label, or output (+ instruction or "
                     f"input); this one has {sorted(row)}: map them with options.columns")


def words(value: Any, field: str) -> list[str]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not value or not all(isinstance(w, str) and w for w in value):
        raise ValueError(f"missing field: {field}" if value is None else f"{field}: expected a list of words")
    return value


def to_record(row: dict[str, Any], kind: str, columns: dict[str, str], labels: list[str] | None) -> dict[str, Any]:
    if kind == "tokens":
        tokens, tags = words(column(row, columns, "tokens"), "tokens"), words(column(row, columns, "tags"), "tags")
        if len(tokens) != len(tags):
            raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
        unknown = sorted(set(tags) - set(labels)) if labels else []
        if unknown:
            raise ValueError(f"unknown tags {unknown} (labels: {', '.join(labels)})")
        return {"kind": "tokens", "tokens": tokens, "tags": tags}
    if kind == "labelled":
        label = column(row, columns, "label")
        if label is None or str(label).strip() == "":
            raise ValueError("missing field: label")
        label = str(label).strip()
        if labels and label not in labels:
            raise ValueError(f"unknown label {label!r} (labels: {', '.join(labels)})")
        record = {"kind": "labelled", "text": text_of(column(row, columns, "text"), "text"), "label": label}
        pair = column(row, columns, "text_pair")
        return {**record, "text_pair": text_of(pair, "text_pair")} if "text_pair" in columns or pair is not None else record
    instruction, extra = column(row, columns, "instruction") or "", column(row, columns, "input") or ""
    if not str(instruction).strip() and not str(extra).strip():
        raise ValueError("missing field: instruction (or input)")
    return {"kind": "instruction", "instruction": str(instruction), "input": str(extra),
            "output": text_of(column(row, columns, "output"), "output")}


def read(raw_dir: Path, options: dict[str, Any], ledger: Ledger) -> Iterator[dict[str, Any]]:
    columns = options.get("columns") or {}
    labels = [str(label) for label in options["labels"]] if options.get("labels") else None
    kind: list[str] = []  # the first row decides; the rest must have the same fields

    def record_of(row: dict[str, Any]) -> dict[str, Any]:
        if not kind:  # shape_of raises StageError, not a reject: with no usable columns no row would do
            kind.append(shape_of(row, columns))
        return to_record(row, kind[0], columns, labels)

    yield from records_of(raw_dir, ledger, columns, record_of)
