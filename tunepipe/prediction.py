"""The predict stage's rows: which model predicts (before or after training), what each output row holds, and
a head's labels.

`before` is the pretrained base as training starts from it: zero-shot for a language model (loaded in 4-bit
for QLoRA), and for a head the pretrained encoder with a new head initialised from the experiment's seed.
`after` is the trained model. Each output row holds the id, the input as a reader would see it, the prompt as
the model saw it, the prediction and the reference the metric compares it with, so a row can be inspected
without joining files.

A generator behind a gate (score.gate: a pair classifier decides whether to refuse) must answer where the gate
lets a row through. `predict.answer_anyway` lists refusal openings: rows whose prediction opens with one are
generated again with the tokens those refusals opened with barred at the first new position only (generate's
begin_suppress_tokens), and that answer is kept beside the prediction as `answer` (the prediction stays what
the model said on its own, so both are scored).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tunepipe.context import cut_middle, model_context
from tunepipe.devices import device
from tunepipe.errors import StageError
from tunepipe.files import read_jsonl
from tunepipe.generation import batches, generate
from tunepipe.loading import load_base, load_trained
from tunepipe.references import answer_of, reference_for
from tunepipe.splits import source_id


def shown_input(record: dict[str, Any]) -> str:
    if record["kind"] == "chat":  # the conversation up to the answer the model gives
        return "\n".join(f"{turn['role']}: {turn['content']}" for turn in record["messages"][:-1])
    if record["kind"] in ("preference", "unpaired"):
        prompt = record["prompt"]
        return prompt if isinstance(prompt, str) else "\n".join(f"{t['role']}: {t['content']}" for t in prompt)
    if record["kind"] == "text":
        return record["text"]
    if record["kind"] == "tokens":
        return " ".join(record["tokens"])
    if record["kind"] == "labelled":
        return record["text"] + (f"\n{record['text_pair']}" if record.get("text_pair") else "")
    return f"{record['instruction']}\n\n{record['input']}".strip() if record.get("input") else record["instruction"]


def classify(model, tokenizer, rows: list[dict], params: dict, labels: list[str],
             swapped: list[dict] | None = None) -> dict[str, Any]:
    """A label per row (sequence head) or a tag per word from its first sub-token (token head). With
    `swapped` (the same sentence pairs in the other order), a pair's label is the one whose probability,
    averaged over both orders, is highest: for a symmetric task the order carries no meaning."""
    import torch

    def probabilities(these: list[dict]) -> dict[str, torch.Tensor]:
        found = {}
        for batch in batches(these, int(params["batch_size"]), "predict"):
            features = [{k: row[k] for k in ("input_ids", "token_type_ids") if k in row} for row in batch]
            inputs = tokenizer.pad(features, return_tensors="pt").to(model.device)
            with torch.no_grad():
                probs = model(**inputs).logits.float().softmax(-1)
            found.update({row["id"]: p for row, p in zip(batch, probs)})
        return found

    predictions = {}
    given = probabilities(rows)
    if swapped is not None:
        other = probabilities(swapped)
        return {row_id: labels[int((p + other[row_id]).argmax())] for row_id, p in given.items()}
    for row in rows:
        best = given[row["id"]].argmax(-1).tolist()
        if "word_ids" not in row:
            predictions[row["id"]] = labels[best]
            continue
        # word index -> the tag of its first sub-token; a word with none (cut off, or a character the
        # tokenizer drops, such as a soft hyphen) gets none here and O in main
        words, tags = row["word_ids"], {}
        for i, word in enumerate(words):
            if word >= 0 and word not in tags:
                tags[word] = labels[best[i]]
        predictions[row["id"]] = tags
    return predictions


def swapped_pairs(tokenizer, rows: list[dict], records: dict[str, dict], context: int) -> list[dict]:
    """The test pairs tokenized in the other order (text_pair first), cut to the context as tokenize cuts."""
    encoded = tokenizer([records[r["id"]]["text_pair"] for r in rows], [records[r["id"]]["text"] for r in rows],
                        truncation=True, max_length=context)
    return [{"id": row["id"], "input_ids": encoded["input_ids"][i], "prompt_length": len(encoded["input_ids"][i]),
             **({"token_type_ids": encoded["token_type_ids"][i]} if "token_type_ids" in encoded else {})}
            for i, row in enumerate(rows)]


def load_model(setup: dict[str, Any], which: str, base: Path, experiment: str, labels: list[str], dtype: str):
    """The model that predicts, in `dtype`: the base as training starts from it (`before`), or the trained one."""
    from transformers import set_seed

    if which == "before" and setup.get("init_from"):  # training starts from another experiment's model
        model = load_trained(base, Path("models/trained") / setup["init_from"], dtype=dtype)
    elif which == "before":
        set_seed(setup["seed"])  # the same new head that training starts from
        # QLoRA starts from the 4-bit base, so that is its "before"
        model = load_base(setup["kind"], base, labels=None if setup["generates"] else labels,
                          qlora=setup["qlora"], dtype=dtype).eval()
    else:
        trained = Path("models/trained") / experiment
        if not trained.exists():
            raise StageError(f"{trained}: not found (run dvc repro train@{experiment})")
        model = load_trained(base, trained, dtype=dtype)
    if setup["qlora"] is None:  # a 4-bit model is placed on its device as it loads
        model.to(device())
    return model


def test_rows(experiment: str, dataset: str, max_rows: int | None) -> tuple[list[dict], dict[str, dict]]:
    """The tokenized test rows (sorted by id, the first `max_rows`) and the converted record behind each."""
    from datasets import load_from_disk

    test_split = Path("data/tokenized") / experiment / "test"
    if not list(test_split.glob("*.arrow")):  # datasets saves no data file for an empty split
        raise StageError(f"{test_split}: the test split has no rows to predict (see convert's ledger)")
    rows = load_from_disk(str(test_split)).to_list()
    rows = sorted(rows, key=lambda row: row["id"])[: max_rows or None]
    converted = {r["id"]: r for r in read_jsonl(Path("data/converted") / dataset / "test.jsonl")}
    return rows, {row["id"]: converted[source_id(row["id"])] for row in rows}  # a long text's pieces share one


def fit_prompts(rows: list[dict], room: int) -> int:
    """Prompts past `room` lose their middle, so the new tokens have positions too; how many were cut."""
    cut = 0
    for row in rows:
        if row["prompt_length"] > room:
            row.update(input_ids=cut_middle(row["input_ids"][:row["prompt_length"]], room), prompt_length=room)
            cut += 1
    return cut


def generated(model, tokenizer, rows: list[dict], params: dict, settings: dict, base: Path,
              label: str) -> tuple[dict, dict | None, dict[str, int]]:
    """Each row's generated prediction, the answers past a refusal (answer_anyway) and the counts of both."""
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    cut = 0 if encoder_decoder else fit_prompts(rows, model_context(base, tokenizer) - int(params["max_new_tokens"]))
    firsts: dict[str, int] = {}
    predictions = generate(model, tokenizer, rows, params, settings, encoder_decoder, first_tokens=firsts)
    if not params.get("answer_anyway"):
        return predictions, None, {"cut": cut, "answered_again": 0}
    refused = [row for row in rows if predictions[row["id"]].startswith(tuple(params["answer_anyway"]))]
    # the tokens these refusals really opened with (an opening's own tokenization may differ in context)
    barred = sorted({firsts[row["id"]] for row in refused})
    again = generate(model, tokenizer, refused, params, settings, encoder_decoder, barred=barred)
    answers = {row["id"]: again.get(row["id"], predictions[row["id"]]) for row in rows}
    print(f"[predict] {label}: {len(again)} of {len(rows)} rows opened with a refusal; answered again without it",
          file=sys.stderr)
    return predictions, answers, {"cut": cut, "answered_again": len(again)}


def classified(model, tokenizer, rows: list[dict], records: dict[str, dict], params: dict, labels: list[str],
               base: Path, where: str, dataset: str) -> dict[str, Any]:
    """A head's predictions: a label per row, or one tag per word of the record (O where a word has none)."""
    both = params.get("pair_orders") == "both"
    if both and not all(records[r["id"]].get("text_pair") for r in rows):
        raise StageError(f"{where}.pair_orders: both needs sentence pairs; dataset '{dataset}' has rows without "
                         f"text_pair")
    swapped = swapped_pairs(tokenizer, rows, records, model_context(base, tokenizer)) if both else None
    predictions = classify(model, tokenizer, rows, params, labels, swapped)
    for row_id, tags in predictions.items():  # one tag per word of the record, by word index
        if isinstance(tags, dict):
            predictions[row_id] = [tags.get(i, "O") for i in range(len(records[row_id]["tokens"]))]
    return predictions


def output_rows(rows: list[dict], records: dict[str, dict], predictions: dict, answers: dict | None,
                setup: dict[str, Any], tokenizer):
    """The predictions file's rows: id, input, the prompt the model was given (chat template and any cut
    included), prediction, any answer past a refusal, and the reference."""
    scored = setup["generates"] and setup["metric"] != "perplexity"
    for row in rows:
        yield {"id": row["id"], "input": shown_input(records[row["id"]]),
               "prompt": tokenizer.decode(row["input_ids"][:row["prompt_length"]]) if scored else None,
               "prediction": predictions[row["id"]], **({"answer": answers[row["id"]]} if answers else {}),
               "reference": reference_for(setup["metric"], records[row["id"]])}
