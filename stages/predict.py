"""predict: the test split through the model before and after training -> data/predictions/<experiment>/<which>.jsonl.

`before` is the pretrained base as training starts from it: zero-shot for a language model (loaded in 4-bit
for QLoRA), and for a head the pretrained encoder with a new head initialised from the experiment's seed. `after` is the
trained model from models/trained/<experiment> (an adapter on its base, prompt embeddings or full weights;
a QLoRA adapter on its 4-bit base). Both read the same rows, so they are scored on the same rows.

A language model generates, batched by prompt length (decoder-only models are left-padded so every row
continues from its right end: batches of 8 ran 2.9x faster than one row at a time on CPU with identical
outputs; a finished row stops adding tokens and the batch stops when all are done). Decoding is greedy
unless `predict.<exp>.decoding` says otherwise (do_sample, temperature, top_p, seed, repetition_penalty,
stop strings); the settings used are saved beside the predictions as <which>.settings.json, with how many
prompts were cut to leave the new tokens room in the context (never silently). A head predicts a label per
sentence or a tag per word (its first sub-token's). Each output row holds the id, the input as a reader
would see it, the prompt as the model saw it, the prediction and the reference the metric compares it with,
so a row can be inspected without joining files.

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

from tqdm import tqdm

from stages.common import (
    StageError,
    pin_threads,
    source_id,
    read_jsonl,
    read_labels,
    run_stage,
    write_json,
    write_jsonl,
)
from stages.settings import load_experiment, where
from stages.modeling import cut_middle, device, load_base, load_tokenizer, load_trained, model_context

WHICH = ("before", "after")
def decoding_settings(params: dict[str, Any]) -> dict[str, Any]:
    """generate()'s keyword arguments from the experiment's `predict`: greedy unless sampling is asked for
    (the config stage has checked them: types, ranges, a seed for sampling)."""
    decoding = dict(params.get("decoding") or {})
    sampling = bool(decoding.pop("do_sample", False))
    seed = decoding.pop("seed", None)
    return {"max_new_tokens": int(params["max_new_tokens"]), "do_sample": sampling, **decoding,
            **({"seed": seed} if sampling else {})}


def answer_of(record: dict[str, Any]) -> str:
    return record["messages"][-1]["content"] if record["kind"] == "chat" else record["output"]


def reference_for(metric: str, record: dict[str, Any]) -> Any:
    """What the experiment's metric compares a prediction with."""
    if metric == "perplexity":  # the row's own tokens are what is scored: the text they come from
        return record["text"] if record["kind"] == "text" else answer_of(record)
    if metric == "rouge_any":
        return record.get("references") or [answer_of(record)]  # DialogSum test rows have three
    if metric == "label_match":
        return record["label"]
    if metric == "refusal":
        return record["answers"]  # [] means the evidence does not answer: the right output is a refusal
    return record["tags"]  # ner_seqeval


def shown_input(record: dict[str, Any]) -> str:
    if record["kind"] == "chat":  # the conversation up to the answer the model gives
        return "\n".join(f"{turn['role']}: {turn['content']}" for turn in record["messages"][:-1])
    if record["kind"] == "text":
        return record["text"]
    if record["kind"] == "tokens":
        return " ".join(record["tokens"])
    if record["kind"] == "labelled":
        return record["text"] + (f"\n{record['text_pair']}" if record.get("text_pair") else "")
    return f"{record['instruction']}\n\n{record['input']}".strip() if record.get("input") else record["instruction"]


def batches(rows: list[dict], size: int, desc: str):
    ordered = sorted(rows, key=lambda row: (row["prompt_length"], row["id"]))  # similar lengths pad little
    for start in tqdm(range(0, len(ordered), size), desc=desc, unit="batch"):
        yield ordered[start:start + size]


def generate(model, tokenizer, rows: list[dict], params: dict, settings: dict, encoder_decoder: bool,
             barred: list[int] | None = None, first_tokens: dict[str, int] | None = None) -> dict[str, str]:
    """Each row's answer; `barred` tokens may not open one; `first_tokens`, if given, gets each answer's first token."""
    import torch
    from transformers import set_seed

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = settings.get("stop") or []
    options = {k: v for k, v in settings.items() if k not in ("stop", "seed")}
    if stops:  # generation ends at a stop string; the string itself is cut from the answer below
        options.update(stop_strings=stops, tokenizer=tokenizer)
    if settings.get("seed") is not None:
        set_seed(settings["seed"])  # sampling: same params, same batches, same outputs
    answers = {}
    for batch in batches(rows, int(params["batch_size"]), "generate"):
        prompts = [row["input_ids"][:row["prompt_length"]] for row in batch]
        width = max(len(p) for p in prompts)
        # a decoder-only model continues each row from the right end, so pad on the left; an encoder does
        # not care, and its decoder output holds only new tokens
        pads = [[pad_id] * (width - len(p)) for p in prompts]
        ids = [p + pad if encoder_decoder else pad + p for p, pad in zip(prompts, pads)]
        mask = [[1] * len(p) + [0] * len(pad) if encoder_decoder else [0] * len(pad) + [1] * len(p)
                for p, pad in zip(prompts, pads)]
        with torch.no_grad():
            output = model.generate(input_ids=torch.tensor(ids, device=model.device),
                                    attention_mask=torch.tensor(mask, device=model.device),
                                    pad_token_id=pad_id, **options,
                                    **({"begin_suppress_tokens": barred} if barred else {}))
        new_tokens = output[:, 1:] if encoder_decoder else output[:, width:]  # past the decoder's start token
        for row, tokens in zip(batch, new_tokens):
            if first_tokens is not None:
                first_tokens[row["id"]] = int(tokens[0])
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            for stop in stops:
                text = text.split(stop, 1)[0]
            answers[row["id"]] = text.strip()
    return answers


def likelihoods(model, tokenizer, rows: list[dict], params: dict, encoder_decoder: bool) -> dict[str, dict]:
    """Each row's summed negative log-likelihood of its labelled tokens and their count (metrics/perplexity)."""
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    scores = {}
    for batch in batches(rows, int(params["batch_size"]), "likelihood"):
        if encoder_decoder:  # the prompt to the encoder, the labels to the decoder
            inputs = [row["input_ids"][:row["prompt_length"]] for row in batch]
            targets = [row["labels"] for row in batch]
        else:
            inputs, targets = [row["input_ids"] for row in batch], [row["labels"] for row in batch]
        width, label_width = max(map(len, inputs)), max(map(len, targets))
        ids = torch.tensor([x + [pad_id] * (width - len(x)) for x in inputs], device=model.device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in inputs], device=model.device)
        labels = torch.tensor([y + [-100] * (label_width - len(y)) for y in targets], device=model.device)
        with torch.no_grad():
            if encoder_decoder:
                logits = model(input_ids=ids, attention_mask=mask, labels=labels.clamp(min=0)).logits
            else:  # position t predicts token t + 1
                logits, labels = model(input_ids=ids, attention_mask=mask).logits[:, :-1], labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100,
                                                reduction="none").sum(-1)
        for row, total, count in zip(batch, nll.tolist(), (labels != -100).sum(-1).tolist()):
            scores[row["id"]] = {"nll": round(total, 6), "tokens": int(count)}
    return scores


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


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in WHICH:
        raise StageError(f"usage: python -m stages.predict <experiment> {{{'|'.join(WHICH)}}}")
    experiment, which = argv
    setup = load_experiment(experiment, "predict")
    params = setup.pop("predict")
    settings = decoding_settings(params) if setup["generates"] else {}

    from datasets import load_from_disk
    from transformers import set_seed

    pin_threads(params.get("threads", 2))
    base = Path("models/base") / setup["model"]
    labels = read_labels(setup)
    if which == "before":
        set_seed(setup["seed"])  # the same new head that training starts from
        # QLoRA starts from the 4-bit base, so that is its "before"
        model = load_base(setup["kind"], base, labels=None if setup["generates"] else labels,
                          qlora=setup["qlora"]).eval()
    else:
        trained = Path("models/trained") / experiment
        if not trained.exists():
            raise StageError(f"{trained}: not found (run dvc repro train@{experiment})")
        model = load_trained(base, trained)
    if setup["qlora"] is None:  # a 4-bit model is placed on its device as it loads
        model.to(device())
    tokenizer = load_tokenizer(base)

    test_split = Path("data/tokenized") / experiment / "test"
    if not list(test_split.glob("*.arrow")):  # datasets saves no data file for an empty split
        raise StageError(f"{test_split}: the test split has no rows to predict (see convert's ledger)")
    rows = load_from_disk(str(test_split)).to_list()
    rows = sorted(rows, key=lambda row: row["id"])[: params.get("max_rows") or None]
    converted = {r["id"]: r for r in read_jsonl(Path("data/converted") / setup["dataset"] / "test.jsonl")}
    records = {row["id"]: converted[source_id(row["id"])] for row in rows}  # a long text's pieces share one
    cut, answers, answered_again = 0, None, 0
    if setup["metric"] == "perplexity":
        predictions = likelihoods(model, tokenizer, rows, params, bool(getattr(model.config, "is_encoder_decoder", False)))
    elif setup["generates"]:
        encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        if not encoder_decoder:  # the new tokens need positions too: a prompt gives up its middle for them
            room = model_context(base, tokenizer) - int(params["max_new_tokens"])
            for row in rows:
                if row["prompt_length"] > room:
                    row.update(input_ids=cut_middle(row["input_ids"][:row["prompt_length"]], room), prompt_length=room)
                    cut += 1
        firsts: dict[str, int] = {}
        predictions = generate(model, tokenizer, rows, params, settings, encoder_decoder, first_tokens=firsts)
        if params.get("answer_anyway"):
            refused = [row for row in rows if predictions[row["id"]].startswith(tuple(params["answer_anyway"]))]
            # the tokens these refusals really opened with (an opening's own tokenization may differ in context)
            barred = sorted({firsts[row["id"]] for row in refused})
            again = generate(model, tokenizer, refused, params, settings, encoder_decoder, barred=barred)
            answers, answered_again = {row["id"]: again.get(row["id"], predictions[row["id"]]) for row in rows}, len(again)
            print(f"[predict] {experiment} {which}: {answered_again} of {len(rows)} rows opened with a refusal; "
                  f"answered again without it", file=sys.stderr)
    else:
        both = params.get("pair_orders") == "both"
        if both and not all(records[r["id"]].get("text_pair") for r in rows):
            raise StageError(f"{where(experiment, 'predict')}.pair_orders: both needs sentence pairs; "
                             f"dataset '{setup['dataset']}' has rows without text_pair")
        swapped = swapped_pairs(tokenizer, rows, records, model_context(base, tokenizer)) if both else None
        predictions = classify(model, tokenizer, rows, params, labels, swapped)
        for row_id, tags in predictions.items():  # one tag per word of the record, by word index
            if isinstance(tags, dict):
                predictions[row_id] = [tags.get(i, "O") for i in range(len(records[row_id]["tokens"]))]
    out = Path("data/predictions") / experiment / f"{which}.jsonl"

    def prompt(row: dict) -> str | None:  # what the model was given, chat template and any cut included
        scored = setup["generates"] and setup["metric"] != "perplexity"
        return tokenizer.decode(row["input_ids"][:row["prompt_length"]]) if scored else None

    write_jsonl(out, ({"id": row["id"], "input": shown_input(records[row["id"]]), "prompt": prompt(row),
                       "prediction": predictions[row["id"]], **({"answer": answers[row["id"]]} if answers else {}),
                       "reference": reference_for(setup["metric"], records[row["id"]])} for row in rows))
    write_json(out.with_suffix(".settings.json"), {
        "rows": len(rows), "batch_size": int(params["batch_size"]), "decoding": settings or None,
        "prompts_cut_to_fit": cut, "model": "base" if which == "before" else "trained",
        **({"pair_orders": "both"} if params.get("pair_orders") == "both" else {}),
        **({"answer_anyway": params["answer_anyway"],
            "answered_again": answered_again} if answers else {})})
    if cut:
        print(f"[predict] {experiment} {which}: {cut} of {len(rows)} prompts lost their middle to leave "
              f"{params['max_new_tokens']} new tokens room in the context", file=sys.stderr)
    print(f"[predict] {experiment} {which}: {len(rows)} rows -> {out}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
