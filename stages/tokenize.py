"""tokenize: data/converted/<dataset>/ -> data/tokenized/<experiment>/ (Arrow, `datasets.save_to_disk`).

One encoder per model kind (stages/modeling.py has the table), each writing `input_ids` and `labels`:
- causal_lm: chat-templated prompt + answer; labels are the same ids with the prompt masked (-100), so the
  loss counts only the answer. `prompt_length` lets generation feed the prompt alone.
- seq2seq: the prompt is the encoder input, the answer (+ end of sequence) the decoder labels.
- token_head: words split into sub-tokens; a word's tag labels its first sub-token, -100 the rest;
  `word_ids` maps predictions back to words.
- sequence_head: a sentence or a sentence pair; the label's index in the dataset's labels.json.
Labelled rows reach a language model through `prompt` (a template and a verbaliser such as
{equivalent: "yes"}), so one converted dataset serves a head and an LLM alike.
Nothing is padded here: the train stage pads per batch. Training rows longer than `max_length` are left
out and listed in `dropped.jsonl`; evaluation rows are all kept (scores cover the whole split), an
evaluation prompt longer than the model's context (or `eval_max_length`) cut by the rule in
`fit_to_context`. The counts per split go to reports/tokenize/<experiment>.json.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from stages.common import (
    StageError,
    atomic_dir,
    load_experiment,
    load_params,
    one_item,
    read_jsonl,
    read_labels,
    run_stage,
    write_json,
    write_jsonl,
)
from stages.modeling import cut_middle, model_context

SPLITS = ("train", "validation", "test")
IGNORE = -100  # label id that torch's cross-entropy skips


def render_prompt(record: dict[str, Any], template: dict[str, Any], where: str) -> dict[str, Any]:
    """A labelled row as instruction / input / output through str.format templates over its text fields
    and `{label}` (verbalised through template.labels); the original label stays in the row."""
    fields = {key: value for key, value in record.items() if isinstance(value, str)}
    fields["label"] = str(template.get("labels", {}).get(record["label"], record["label"]))
    try:
        rendered = {name: template.get(name, default).format(**fields)
                    for name, default in (("instruction", ""), ("input", ""), ("output", "{label}"))}
    except KeyError as err:
        raise StageError(f"{where}.prompt: template field {err} is not in a labelled row "
                         f"(fields: {', '.join(sorted(fields))})") from None
    return {**record, **rendered}


def prompt_text(record: dict[str, Any]) -> str:
    return f"{record['instruction']}\n\n{record['input']}".strip() if record.get("input") else record["instruction"]


def _ids(encoded) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True); older ones a list
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def encode_causal(tokenizer, record: dict[str, Any], params: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    system = params.get("system_prompt")
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt_text(record)}]
    if tokenizer.chat_template:
        prompt = _ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
        ids = _ids(tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": record["output"]}],
                                                 tokenize=True))
        if ids[:len(prompt)] != prompt:
            raise StageError("the chat template renders the prompt differently with and without the answer; "
                             "labels cannot be masked on the prompt for this model")
    else:  # a base model with no chat template: plain prompt, answer, end-of-sequence
        prompt = tokenizer(prompt_text(record) + "\n\n", add_special_tokens=True)["input_ids"]
        ids = prompt + tokenizer(record["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": ids, "labels": [IGNORE] * len(prompt) + ids[len(prompt):], "prompt_length": len(prompt)}


def encode_seq2seq(tokenizer, record: dict[str, Any], params: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    prompt = tokenizer(prompt_text(record), add_special_tokens=True)["input_ids"]  # T5 appends </s>
    answer = tokenizer(text_target=record["output"], add_special_tokens=True)["input_ids"]
    return {"input_ids": prompt, "labels": answer, "prompt_length": len(prompt)}


def encode_token_head(tokenizer, record: dict[str, Any], params: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    encoded = tokenizer(record["tokens"], is_split_into_words=True, return_attention_mask=False)
    index = {tag: i for i, tag in enumerate(labels)}
    word_ids = [-1 if w is None else w for w in encoded.word_ids()]
    tag_ids, previous = [], -1
    for word in word_ids:  # the first sub-token of a word carries its tag; the rest and specials are ignored
        tag_ids.append(index[record["tags"][word]] if word >= 0 and word != previous else IGNORE)
        previous = word
    return {"input_ids": encoded["input_ids"], "labels": tag_ids, "word_ids": word_ids,
            "prompt_length": len(encoded["input_ids"])}


def encode_sequence_head(tokenizer, record: dict[str, Any], params: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    encoded = tokenizer(record["text"], record.get("text_pair"), return_attention_mask=False)
    row = {"input_ids": encoded["input_ids"], "labels": labels.index(record["label"]),
           "prompt_length": len(encoded["input_ids"])}
    if "token_type_ids" in encoded:  # BERT tells the two sentences of a pair apart by these
        row["token_type_ids"] = encoded["token_type_ids"]
    return row


ENCODERS = {"causal_lm": encode_causal, "seq2seq": encode_seq2seq,
            "token_head": encode_token_head, "sequence_head": encode_sequence_head}


def fit_to_context(row: dict[str, Any], kind: str, context: int, ends_special: bool) -> bool:
    """Cut an evaluation row longer than the model's context, keeping the row; True when it cut.

    The rule: a language model's prompt loses its middle (`cut_middle`: the instruction opens it; the
    question and the assistant turn close it) until prompt and answer fit, since the validation loss reads
    both. A head's input keeps its first tokens and, where the tokenizer ends it with one, its final special
    token; a word whose first sub-token is cut is predicted as O.
    """
    if kind in ("causal_lm", "seq2seq"):
        answer = row["input_ids"][row["prompt_length"]:]  # empty for seq2seq: its answer is the decoder's
        limit = max(context - len(answer), context // 2)
        if row["prompt_length"] <= limit:
            return False
        prompt = cut_middle(row["input_ids"][:row["prompt_length"]], limit)
        labels = row["labels"] if kind == "seq2seq" else [IGNORE] * limit + row["labels"][row["prompt_length"]:]
        row.update(input_ids=prompt + answer, labels=labels, prompt_length=limit)
        return True
    if len(row["input_ids"]) <= context:
        return False
    keep = context - 1 if ends_special else context
    for key in ("input_ids", "token_type_ids", "word_ids", "labels"):
        if isinstance(row.get(key), list):
            row[key] = row[key][:keep] + (row[key][-1:] if ends_special else [])
    row["prompt_length"] = len(row["input_ids"])
    return True


def tokenize_split(tokenizer, rows: list[dict[str, Any]], setup: dict[str, Any], params: dict[str, Any],
                   labels: list[str], split: str, where: str, context: int):
    encode, max_length = ENCODERS[setup["kind"]], int(params["max_length"])
    kept, dropped, truncated, special = [], [], 0, set(tokenizer.all_special_ids)
    for record in tqdm(rows, desc=f"tokenize {split}", unit="row", disable=len(rows) < 500):
        if record["kind"] not in setup["kind_rows"]:
            raise StageError(f"{where}: dataset '{setup['dataset']}' holds {record['kind']} rows; a "
                             f"{setup['kind']} reads {' or '.join(setup['kind_rows'])} rows")
        if record["kind"] == "labelled" and setup["kind"] in ("causal_lm", "seq2seq"):
            if not params.get("prompt"):
                raise StageError(f"{where}.prompt: a {setup['kind']} needs a prompt template to read the "
                                 f"labelled rows of '{setup['dataset']}'")
            record = render_prompt(record, params["prompt"], where)
        row = encode(tokenizer, record, params, labels)
        # A training row must fit max_length whole, or it is left out (listed). Every evaluation row is
        # kept, so scores cover the whole split: a prompt past the model's context is cut by a fixed rule.
        if split != "train":
            truncated += fit_to_context(row, setup["kind"], context, row["input_ids"][-1] in special)
        elif len(row["input_ids"]) > max_length:
            dropped.append({"id": record["id"], "split": split,
                            "reason": f"too long: {len(row['input_ids'])} > max_length {max_length} tokens"})
            continue
        kept.append({"id": record["id"], **row})
    return kept, dropped, truncated


def main(argv: list[str]) -> None:
    experiment = one_item(argv, "tokenize")
    setup = load_experiment(experiment)
    params = load_params("tokenize", experiment, required=("max_length",))
    from datasets import Dataset, DatasetDict
    from transformers import AutoTokenizer

    where = f"params.yaml tokenize.{experiment}"
    source = Path("data/converted") / setup["dataset"]
    labels = read_labels(setup)
    base = Path("models/base") / setup["model"]
    tokenizer = AutoTokenizer.from_pretrained(base)
    context = int(params.get("eval_max_length") or model_context(base, tokenizer))

    splits, dropped, counts = {}, [], {}
    for split in SPLITS:
        path = source / f"{split}.jsonl"
        if not path.exists():
            raise StageError(f"{path}: not found (run dvc repro convert@{setup['dataset']})")
        kept, lost, truncated = tokenize_split(tokenizer, read_jsonl(path), setup, params, labels, split, where,
                                               context)
        dropped += lost
        # Fingerprint from content, not from a random id or file mtime: state.json bytes stay stable.
        content = hashlib.sha256(json.dumps(kept, separators=(",", ":")).encode()).hexdigest()
        splits[split] = Dataset.from_list(kept).map(lambda row: row, new_fingerprint=content[:16])
        lengths = [len(row["input_ids"]) for row in kept]
        counts[split] = {"rows": len(kept), "tokens": sum(lengths), "dropped": len(lost), "truncated": truncated}
        print(f"[tokenize] {experiment} {split}: {len(kept)} rows, {sum(lengths)} tokens, "
              f"max {max(lengths, default=0)}, dropped {len(lost)}, prompts cut to the context {truncated}")
    if not splits["train"].num_rows:
        raise StageError(f"{where}: no training row fits max_length {params['max_length']}")
    with atomic_dir(Path("data/tokenized") / experiment) as out:
        DatasetDict(splits).save_to_disk(str(out))
        write_jsonl(out / "dropped.jsonl", dropped)
    write_json(Path("reports/tokenize") / f"{experiment}.json", counts)  # the report shows what was dropped


if __name__ == "__main__":
    run_stage(main)
