"""convert: data/raw/<dataset>/ (the release's own format) -> data/converted/<dataset>/<split>.jsonl.

Every raw record ends in a split file or in data/rejected/<dataset>.jsonl with its place and reason; the
ledger (read + synthesized = written + rejected + dropped) is printed and saved (bookkeeping, not a DVC
metric) in reports/ledger/<dataset>.json, and the stage fails when rejects pass `max_reject_rate` or when
the options leave out (down-sample) more than `max_drop_rate` (default 0.5) of the good records. The
reader is the dataset's `format` (tunepipe/formats/); splits, de-duplication and labels are
tunepipe/conversion.py's.
"""
from __future__ import annotations

from pathlib import Path

from tunepipe.conversion import convert, label_order, ledger_limits
from tunepipe.errors import StageError
from tunepipe.files import atomic_dir, write_json, write_jsonl
from tunepipe.formats import reader_module
from tunepipe.ledger import Ledger
from tunepipe.sources import data_params
from tunepipe.stage import one_item, run_stage


def main(argv: list[str]) -> None:
    dataset = one_item(argv, "convert")
    params, where = data_params(dataset)
    if not params.get("format"):
        raise StageError(f"{where}: missing required key 'format'")
    raw_dir = Path("data/raw") / dataset
    if not raw_dir.is_dir():
        raise StageError(f"{raw_dir}: not found (run the download stage first: dvc repro download@{dataset})")
    limits = ledger_limits(params, where)
    ledger = Ledger(f"convert {dataset}")
    by_split = convert(raw_dir, params, ledger, where)
    # the rejects and the ledger are written first: when the limit fails the stage, they say why
    write_jsonl(Path("data/rejected") / f"{dataset}.jsonl", ledger.rejected + ledger.dropped)
    write_json(Path("reports/ledger") / f"{dataset}.json", ledger.summary())
    ledger.check(limits["max_reject_rate"], limits["max_drop_rate"])
    labels = label_order(reader_module(params["format"]), params.get("options") or {}, by_split)
    with atomic_dir(Path("data/converted") / dataset) as out:
        for split, rows in by_split.items():
            write_jsonl(out / f"{split}.jsonl", rows)
        write_json(out / "labels.json", labels)


if __name__ == "__main__":
    run_stage(main)
