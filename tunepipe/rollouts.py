"""GRPO's rows: the prompts it samples completions for, each with the record its rewards score them against.

The task's own rows (instruction, chat, or labelled through the prompt template) lose their answer: the
prompt is the conversation up to it, as supervised training renders it (the system prompt included), or the
plain prompt where the model has no chat template. `record_json` keeps the converted record, so a reward reads
the same reference the score stage does (tunepipe/references.py). `prompt_ids` (the prompt as the model
will see it) is what the length check and the memory estimate read. Test rows stay causal rows, predicted
and scored like any generating experiment's.
"""
from __future__ import annotations

import json
from typing import Any

from tunepipe.encoders import conversation, ids_of, prompt_text

COLUMNS = ("prompt_json", "record_json", "prompt_ids")


def rollout_prompt(tokenizer, record: dict[str, Any], system: str | None) -> Any:
    """The conversation before the answer, or the plain prompt for a model with no chat template."""
    if not tokenizer.chat_template:
        return prompt_text(record) + "\n\n"
    return conversation(record, system)[:-1]


def encode_rollouts(tokenizer, records: list[dict[str, Any]], params: dict[str, Any], labels: list[str]) -> list[dict]:
    rows = []
    for record in records:
        prompt = rollout_prompt(tokenizer, record, params.get("system_prompt"))
        ids = ids_of(tokenizer.apply_chat_template(prompt, add_generation_prompt=True)) if isinstance(prompt, list) \
            else tokenizer(prompt)["input_ids"]
        rows.append({"prompt_json": json.dumps(prompt, ensure_ascii=False),
                     "record_json": json.dumps(record, ensure_ascii=False, sort_keys=True),
                     "prompt_ids": ids, "input_ids": ids, "prompt_length": len(ids)})
    return rows


def as_trl_prompts(rows):
    """The Arrow rows as GRPOTrainer reads them: `prompt` as text or turns; the record stays for the rewards."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": json.loads(row["prompt_json"]), "record_json": row["record_json"]}
                              for row in rows])
