"""Preference pairs and unpaired answers tokenized as TRL's DPOTrainer and KTOTrainer tokenize them, written
to Arrow by the tokenize stage.

Training and validation rows keep TRL's three columns: `prompt_ids`, and `chosen_ids` / `rejected_ids`, each
answer's tokens after the prompt. A conversation is rendered by the chat template (the prompt with the
generation prompt, then prompt + answer); plain text is tokenized as it is, each answer ending with
end-of-sequence. The answers start where the prompt's tokens and the prompt + answer's part ways, so the
prompt is masked exactly where TRL masks it (tests/test_pairs.py compares with DPOTrainer's own processing).
Unpaired rows (KTO's) keep `prompt_ids`, `completion_ids` and `label`, the answer found the same way; for
KTO a pair is two such rows, its chosen answer desirable and its rejected one not, as TRL unpairs them.
Test rows become the causal rows every generating experiment predicts from: the prompt, and the chosen (or
desirable) answer as the reference; an undesirable answer is no reference, and such a test row is left out,
listed.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator

from tunepipe.encoders import IGNORE, encode_causal

COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
UNPAIR_BLOCK = 1000  # rows per batch of TRL's unpair_preference_dataset (datasets' map default)
UNPAIRED_COLUMNS = ("prompt_ids", "completion_ids", "label")


def with_system(prompt: Any, system: str | None) -> Any:
    """tokenize.system_prompt opens a conversational prompt that brings none, as it does an SFT row."""
    if not system or isinstance(prompt, str) or prompt[0]["role"] == "system":
        return prompt
    return [{"role": "system", "content": system}, *prompt]


def encode_pair(tokenizer, record: dict[str, Any], params: dict[str, Any]) -> dict[str, list[int]]:
    """One pair's three columns, as DPOTrainer._prepare_dataset computes them."""
    from trl.data_utils import _tokenize, common_prefix_length

    prompt = with_system(record["prompt"], params.get("system_prompt"))
    chosen, rejected = record["chosen"], record["rejected"]
    if isinstance(prompt, str):  # standard: each answer ends with end-of-sequence, as TRL adds it
        eos = tokenizer.eos_token
        chosen, rejected = (answer if answer.endswith(eos) else answer + eos for answer in (chosen, rejected))
        prompt_ids = _tokenize(tokenizer, prompt)["input_ids"]
        with_chosen = _tokenize(tokenizer, prompt + chosen)["input_ids"]
        with_rejected = _tokenize(tokenizer, prompt + rejected)["input_ids"]
    else:
        prompt_ids = _tokenize(tokenizer, prompt, add_generation_prompt=True)["input_ids"]
        with_chosen = _tokenize(tokenizer, prompt + chosen)["input_ids"]
        with_rejected = _tokenize(tokenizer, prompt + rejected)["input_ids"]
    start = min(common_prefix_length(prompt_ids, with_chosen), common_prefix_length(prompt_ids, with_rejected))
    return {"prompt_ids": prompt_ids[:start], "chosen_ids": with_chosen[start:], "rejected_ids": with_rejected[start:]}


def encode_pairs(tokenizer, records: list[dict[str, Any]], params: dict[str, Any], labels: list[str]) -> list[dict]:
    """Training and validation rows; `input_ids` (prompt and the longer answer) is only what the length check
    and the memory estimate read, and is not stored."""
    rows = []
    for record in records:
        row = encode_pair(tokenizer, record, params)
        longer = max(row["chosen_ids"], row["rejected_ids"], key=len)
        rows.append({**row, "input_ids": row["prompt_ids"] + longer, "prompt_length": len(row["prompt_ids"])})
    return rows


def encode_unpaired(tokenizer, records: list[dict[str, Any]], params: dict[str, Any], labels: list[str]) -> list[dict]:
    """KTO's rows: the prompt and its one answer split where TRL splits them (a pair's with itself), the label."""
    rows = []
    for record in records:
        pair = encode_pair(tokenizer, {**record, "chosen": record["completion"], "rejected": record["completion"]},
                           params)
        rows.append({"prompt_ids": pair["prompt_ids"], "completion_ids": pair["chosen_ids"], "label": record["label"],
                     "input_ids": pair["prompt_ids"] + pair["chosen_ids"], "prompt_length": len(pair["prompt_ids"])})
    return rows


def objective_records(records: Iterable[dict[str, Any]], objective: str, split: str,
                      left_out: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The records a preference objective trains and is scored on: for KTO, a pair as its two answers; on the
    test split, an unpaired answer that is desirable as the reference (an undesirable one left out, listed)."""
    records = iter(records)
    while chunk := list(itertools.islice(records, UNPAIR_BLOCK)):
        if split != "test" and objective == "kto":
            # as TRL unpairs a batch: its chosen answers, then its rejected ones, so that KTO's KL estimate (each
            # row against its neighbour's answer) pairs answers of different prompts
            yield from (r for r in chunk if r["kind"] != "preference")  # one answer each already
            pairs = [r for r in chunk if r["kind"] == "preference"]
            for side, label in (("chosen", True), ("rejected", False)):
                yield from ({"id": f"{r['id']}#{side}", "kind": "unpaired", "prompt": r["prompt"],
                             "completion": r[side], "label": label} for r in pairs)
            continue
        for record in chunk:
            if split == "test" and record["kind"] == "unpaired" and not record["label"]:
                left_out.append({"id": record["id"], "split": split,
                                 "reason": "an undesirable answer: no reference to score a prediction against"})
            elif split == "test" and record["kind"] == "unpaired":
                yield {**record, "chosen": record["completion"]}
            else:
                yield record


def encode_prompts(tokenizer, records: list[dict[str, Any]], params: dict[str, Any], labels: list[str]) -> list[dict]:
    """Test rows: the prompt and the chosen answer as a causal row (the same masking as supervised rows)."""
    conversations = [r for r in records if not isinstance(r["prompt"], str)]
    if len(conversations) == len(records):
        chats = [{"kind": "chat", "messages": [*r["prompt"], *r["chosen"]]} for r in records]
        return encode_causal(tokenizer, chats, {**params, "assistant_turns": "last"}, labels)
    if conversations:  # text prompts mixed with conversations: one call each
        return [row for r in records for row in encode_prompts(tokenizer, [r], params, labels)]
    rows = []
    for record in records:
        pair = encode_pair(tokenizer, {**record, "rejected": record["chosen"]}, params)
        ids = pair["prompt_ids"] + pair["chosen_ids"]
        rows.append({"input_ids": ids, "labels": [IGNORE] * len(pair["prompt_ids"]) + pair["chosen_ids"],
                     "prompt_length": len(pair["prompt_ids"])})
    return rows
