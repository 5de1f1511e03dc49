"""Conversion of a dataset's raw files into plain records in splits, through its format's reader (tunepipe/formats/).

Every raw record ends in a split or in the ledger's rejects with its place and reason. Rows are sorted by id
within a split, so the bytes do not depend on file order or the file system. A release's own splits are kept
unless `release_splits` renames them or shares them out by hash. `swapped_pair_copies: true` adds each
training pair again with its two texts swapped (for symmetric tasks such as paraphrase: the model should not
learn which side a sentence came from); validation and test stay as released, so what is scored never changes.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from tunepipe.errors import StageError
from tunepipe.formats import reader_module
from tunepipe.ledger import Ledger
from tunepipe.splits import split_for

SPLITS = ("train", "validation", "test")
DEFAULT_SPLIT = {"train": 0.8, "validation": 0.1, "test": 0.1}
LIMITS = (("max_reject_rate", 0.01), ("max_drop_rate", 0.5))  # the share of rejected / left-out records allowed


def convert(raw_dir: Path, params: dict[str, Any], ledger: Ledger,
            where: str = "the dataset") -> dict[str, list[dict[str, Any]]]:
    """Read, de-duplicate and split records; rejected ones go to the ledger."""
    reader = reader_module(params["format"])
    own = getattr(reader, "OWN_SPLITS", ())
    ratios = params.get("split") or {k: v for k, v in DEFAULT_SPLIT.items() if k not in own}
    unknown = set(ratios) - set(SPLITS)
    if unknown:
        raise StageError(f"{where}: unknown split names {sorted(unknown)} (use {SPLITS})")
    clash = [name for name in own if ratios.get(name)]
    if clash:
        raise StageError(f"{where}: the {params['format']} reader draws the {clash[0]} split itself; "
                         f"remove '{clash[0]}' from split ratios {ratios} so no other row is added to it")
    release = check_release_splits(params.get("release_splits") or {}, where)
    if not isinstance(params.get("swapped_pair_copies", False), bool):
        raise StageError(f"{where}: swapped_pair_copies is true or false, got {params['swapped_pair_copies']!r}")

    def place(split: str | None, group: str) -> str:
        """The split a record lands in: a release that fixes its own keeps it (or what release_splits makes
        of it); otherwise the hash of its group (or id) decides. Readers that pair records across questions
        (WebQA's synthesized refusals) ask it too, so a pair never crosses splits."""
        target = release.get(split, split) if split else ratios
        return split_for(group, target, salt=params.get("seed", "split")) if isinstance(target, dict) else target

    by_split: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    seen: set[str] = set()
    extra = {"place": place} if "place" in inspect.signature(reader.read).parameters else {}
    for record in reader.read(raw_dir, params.get("options") or {}, ledger, **extra):
        if record["id"] in seen:
            ledger.reject(f"#{record['id']}", "duplicate id", record)
            continue
        seen.add(record["id"])
        group = record.pop("group", record["id"])
        split = place(record.pop("split", None), group)
        record["split"] = split
        by_split[split].append(record)
        ledger.written[split] += 1
    if params.get("swapped_pair_copies"):
        by_split["train"] += swapped_copies(by_split["train"], ledger, where)
    for rows in by_split.values():
        rows.sort(key=lambda row: row["id"])
    return by_split


def swapped_copies(rows: list[dict[str, Any]], ledger: Ledger, where: str) -> list[dict[str, Any]]:
    """Each sentence pair once more with text and text_pair swapped; the copy's id is '<id>#swapped'."""
    copies = [{**row, "id": f"{row['id']}#swapped", "text": row["text_pair"], "text_pair": row["text"]}
              for row in rows if row.get("text_pair")]
    if not copies:
        raise StageError(f"{where}: swapped_pair_copies is on, but no training record has a "
                         "text_pair to swap (it is for sentence-pair datasets such as MRPC)")
    ledger.synthesized += len(copies)
    ledger.written["train"] += len(copies)
    return copies


def label_order(reader, options: dict[str, Any], by_split: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The label order a classification head is built with: the reader's own (a release's fixed classes),
    the `labels` option, or the labels and tags the data holds, sorted ("O" first); [] for free text, so
    every dataset has the file and stages can depend on it."""
    if getattr(reader, "LABELS", None):
        return list(reader.LABELS)
    if options.get("labels"):
        return [str(label) for label in options["labels"]]
    found = {str(row["label"]) for rows in by_split.values() for row in rows if row["kind"] == "labelled"}
    found |= {tag for rows in by_split.values() for row in rows if row["kind"] == "tokens" for tag in row["tags"]}
    return sorted(found, key=lambda tag: (tag != "O", tag))


def check_release_splits(release: dict[str, Any], where: str) -> dict[str, Any]:
    """`release_splits` maps a release's own split to another name (DialogSum's dev file as the test split)
    or to ratios that share its rows out by hash (a validation split carved from the release's train)."""
    for name, target in release.items():
        targets = set(target) if isinstance(target, dict) else {target}
        if name not in SPLITS or not targets <= set(SPLITS):
            raise StageError(f"{where}.release_splits: {name}: {target} names an unknown split "
                             f"(use {', '.join(SPLITS)})")
    return release


def ledger_limits(params: dict[str, Any], where: str) -> dict[str, float]:
    """max_reject_rate and max_drop_rate, each a fraction between 0 and 1."""
    limits = {key: params.get(key, default) for key, default in LIMITS}
    for key, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise StageError(f"{where}.{key}: a fraction between 0 and 1, got {value!r}")
    return {key: float(value) for key, value in limits.items()}
