"""predict: the test split through the model before and after training -> data/predictions/<experiment>/<which>.jsonl.

Both read the same rows, so they are scored on the same rows (tunepipe/prediction.py says which model is
`before` and `after` and what a row holds). A language model generates (tunepipe/generation.py) or, for
perplexity, scores its rows' likelihood; a head predicts a label per sentence or a tag per word. The
settings used are saved beside the predictions as <which>.settings.json, with how many prompts were cut to
leave the new tokens room in the context (never silently).
"""
from __future__ import annotations

import sys
from pathlib import Path

from tunepipe.devices import inference_dtype, pin_threads
from tunepipe.errors import StageError
from tunepipe.files import write_json, write_jsonl
from tunepipe.generation import decoding_settings, likelihoods
from tunepipe.loading import load_tokenizer
from tunepipe.prediction import classified, generated, load_model, output_rows, test_rows
from tunepipe.settings import load_experiment, read_labels, where
from tunepipe.stage import run_stage

WHICH = ("before", "after")


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in WHICH:
        raise StageError(f"usage: python -m stages.predict <experiment> {{{'|'.join(WHICH)}}}")
    experiment, which = argv
    setup = load_experiment(experiment, "predict")
    params = setup.pop("predict")
    settings = decoding_settings(params) if setup["generates"] else {}
    pin_threads(params.get("threads", 2))
    base = Path("models/base") / setup["model"]
    labels = read_labels(setup)
    dtype = inference_dtype(params.get("dtype"), setup["kind"], setup["method"])
    model = load_model(setup, which, base, experiment, labels, dtype)
    tokenizer = load_tokenizer(base)
    rows, records = test_rows(experiment, setup["dataset"], params.get("max_rows"))
    answers, counts = None, {"cut": 0, "answered_again": 0}
    if setup["metric"] == "perplexity":
        predictions = likelihoods(model, tokenizer, rows, params, bool(getattr(model.config, "is_encoder_decoder", False)))
    elif setup["generates"]:
        predictions, answers, counts = generated(model, tokenizer, rows, params, settings, base, f"{experiment} {which}")
    else:
        predictions = classified(model, tokenizer, rows, records, params, labels, base, where(experiment, "predict"),
                                 setup["dataset"])
    out = Path("data/predictions") / experiment / f"{which}.jsonl"
    write_jsonl(out, output_rows(rows, records, predictions, answers, setup, tokenizer))
    write_json(out.with_suffix(".settings.json"), {
        "rows": len(rows), "batch_size": int(params["batch_size"]), "decoding": settings or None, "dtype": dtype,
        "prompts_cut_to_fit": counts["cut"], "model": "base" if which == "before" else "trained",
        **({"pair_orders": "both"} if params.get("pair_orders") == "both" else {}),
        **({"answer_anyway": params["answer_anyway"], "answered_again": counts["answered_again"]} if answers else {})})
    if counts["cut"]:
        print(f"[predict] {experiment} {which}: {counts['cut']} of {len(rows)} prompts lost their middle to leave "
              f"{params['max_new_tokens']} new tokens room in the context", file=sys.stderr)
    print(f"[predict] {experiment} {which}: {len(rows)} rows -> {out}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
