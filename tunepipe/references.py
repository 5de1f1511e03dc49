"""What a prediction is compared with: a converted record's answer and the reference each metric reads.
The score stage (through predict's rows) and GRPO's rewards (tunepipe/rewards.py) read the same one."""
from __future__ import annotations

from typing import Any


def answer_of(record: dict[str, Any]) -> str:
    if record["kind"] in ("preference", "unpaired"):  # the preferred (or desirable) answer is the reference
        answer = record["chosen" if record["kind"] == "preference" else "completion"]
        return answer if isinstance(answer, str) else answer[-1]["content"]
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
