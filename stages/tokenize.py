"""tokenize: data/converted/<dataset>/ -> data/tokenized/<experiment>/ (Arrow, `datasets.save_to_disk`).

Each split encoded for the experiment's model kind (tunepipe/encoders.py), streamed in chunks
(tunepipe/tokenization.py): training and validation rows past `max_length` left out and listed in
dropped.jsonl, test rows kept whole or cut to the model's context by a fixed rule. The counts per split go to
reports/tokenize/<experiment>.json.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from tunepipe.context import learned_positions, model_context
from tunepipe.files import atomic_dir, write_json, write_jsonl
from tunepipe.settings import load_experiment, read_labels, where
from tunepipe.stage import one_item, run_stage
from tunepipe.tokenization import tokenize_splits


def main(argv: list[str]) -> None:
    experiment = one_item(argv, "tokenize")
    setup = load_experiment(experiment, "tokenize")
    params = setup.pop("tokenize")
    from datasets import DatasetDict
    from transformers import AutoTokenizer

    base = Path("models/base") / setup["model"]
    tokenizer = AutoTokenizer.from_pretrained(base)
    if params.get("chat_template"):
        tokenizer.chat_template = params["chat_template"]
    positions = model_context(base, tokenizer)
    # test prompts are cut to the first; a row past the second (a learned position table's size) cannot run
    context = (int(params.get("eval_max_length") or positions), positions if learned_positions(base) else None)
    source, labels = Path("data/converted") / setup["dataset"], read_labels(setup)
    with atomic_dir(Path("data/tokenized") / experiment) as out, tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        splits, counts, dropped = tokenize_splits(tokenizer, source, setup, params, labels,
                                                  where(experiment, "tokenize"), context, Path(scratch))
        DatasetDict(splits).save_to_disk(str(out))
        write_jsonl(out / "dropped.jsonl", dropped)
    write_json(Path("reports/tokenize") / f"{experiment}.json", counts)  # the report shows what was dropped


if __name__ == "__main__":
    run_stage(main)
