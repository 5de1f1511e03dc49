"""convert: data/raw/<dataset>/ (the release's own format) -> data/converted/<dataset>/<split>.jsonl.

Every raw record ends in a split file or in data/rejected/<dataset>.jsonl with its place and reason; the
ledger (read + synthesized = written + rejected + dropped) is printed and saved (bookkeeping, not a DVC
metric) in reports/ledger/<dataset>.json, and the stage fails when rejects pass `max_reject_rate` or when
the options leave out (down-sample) more than `max_drop_rate` (default 0.5) of the good records.
Rows are sorted by id within a split, so the bytes do not depend on file order or the file system.
A release's own splits are kept unless `release_splits` renames them or shares them out by hash.
`swapped_pair_copies: true` adds each training pair again with its two texts swapped (for symmetric tasks
such as paraphrase: the model should not learn which side a sentence came from); validation and test stay
as released, so what is scored never changes.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from stages.common import (
    Ledger,
    StageError,
    atomic_dir,
    one_item,
    run_stage,
    split_for,
    write_json,
    write_jsonl,
)
from stages.sources import data_params
from stages.formats import reader_module

SPLITS = ("train", "validation", "test")
DEFAULT_SPLIT = {"train": 0.8, "validation": 0.1, "test": 0.1}


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


def main(argv: list[str]) -> None:
    dataset = one_item(argv, "convert")
    params, where = data_params(dataset)
    if not params.get("format"):
        raise StageError(f"{where}: missing required key 'format'")
    raw_dir = Path("data/raw") / dataset
    if not raw_dir.is_dir():
        raise StageError(f"{raw_dir}: not found (run the download stage first: dvc repro download@{dataset})")
    limits = {key: params.get(key, default) for key, default in (("max_reject_rate", 0.01), ("max_drop_rate", 0.5))}
    for key, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise StageError(f"{where}.{key}: a fraction between 0 and 1, got {value!r}")
    ledger = Ledger(f"convert {dataset}")
    by_split = convert(raw_dir, params, ledger, where)
    # the rejects and the ledger are written first: when the limit fails the stage, they say why
    write_jsonl(Path("data/rejected") / f"{dataset}.jsonl", ledger.rejected + ledger.dropped)
    write_json(Path("reports/ledger") / f"{dataset}.json", ledger.summary())
    ledger.check(float(limits["max_reject_rate"]), float(limits["max_drop_rate"]))

    labels = label_order(reader_module(params["format"]), params.get("options") or {}, by_split)
    with atomic_dir(Path("data/converted") / dataset) as out:
        for split, rows in by_split.items():
            write_jsonl(out / f"{split}.jsonl", rows)
        write_json(out / "labels.json", labels)


if __name__ == "__main__":
    run_stage(main)
