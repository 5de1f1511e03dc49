"""GRPO's rewards: the task's own metric on one completion, and a format reward.

A reward is a metric on one row, so the metric modules that score an experiment (metrics/<name>/, loaded
by path as the score stage loads them, with the experiment's `score` options) also reward its completions:
- rouge_any: ROUGE-L of the completion against the row's references, from 0 to 1;
- label_match: 1 when the completion's label (parsed as the score stage parses it) is the row's;
- refusal: two rewards, `refusal_correct` (1 when the completion refuses exactly where the evidence holds no
  answer) and `answer_match` (1 when, on a row with an answer, it gives an acceptable one);
and `finished`: 1 when the completion is not empty and the model ended it itself, within the length it had.
TRL logs each as rewards/<name>/mean; `train.grpo.reward_weights` weighs them in this order.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from tunepipe.errors import StageError
from tunepipe.layout import METRICS_DIR
from tunepipe.references import reference_for

# metric -> (reward name, what one row's scores give): each metric's numbers are percentages of its rows
PER_ROW = {
    "rouge_any": [("rouge_l", lambda s, answers: s["rougeL"] / 100)],
    "label_match": [("label_match", lambda s, answers: s["accuracy"] / 100)],
    "refusal": [("refusal_correct", lambda s, answers: (s["refusal_recall"] if not answers
                                                         else 100 - s["over_refusal_rate"]) / 100),
                ("answer_match", lambda s, answers: s["answer_match"] / 100)],
}


def check_rewarded(metric: str, where: str) -> None:
    if metric not in PER_ROW:
        raise StageError(f"{where}: objective: grpo rewards completions with the experiment's metric on each one; "
                         f"{metric!r} scores no single completion (rewarded: {', '.join(PER_ROW)})")


def text_of(completion: Any) -> str:
    """A completion as TRL hands it: text, or the assistant's turn of a conversation."""
    return completion if isinstance(completion, str) else completion[-1].get("content") or ""


def metric_rewards(metric: str, options: dict[str, Any]) -> list[Callable]:
    """One reward function per PER_ROW entry: the metric computed on each completion alone."""
    import evaluate

    module = evaluate.load(str(METRICS_DIR / metric))

    def scores(completions: list, records: list[str]) -> list[tuple[dict, Any]]:
        rows = []
        for completion, record in zip(completions, records):
            reference = reference_for(metric, json.loads(record))
            rows.append((module.compute(predictions=[text_of(completion)], references=[reference], **options),
                         reference))
        return rows

    def reward(name: str, value: Callable) -> Callable:
        def per_completion(prompts, completions, record_json, **unused) -> list[float]:
            return [float(value(scored, reference)) for scored, reference in scores(completions, record_json)]
        per_completion.__name__ = name  # TRL's log key: rewards/<name>/mean
        return per_completion

    return [reward(name, value) for name, value in PER_ROW[metric]]


def finished_reward(limit: int, stops: set[int]) -> Callable:
    def finished(prompts, completions, completion_ids, **unused) -> list[float]:
        # TRL cuts a completion after its first stop token: shorter than the limit, or ending on one
        return [float(bool(text_of(c).strip()) and (len(ids) < limit or ids[-1] in stops))
                for c, ids in zip(completions, completion_ids)]
    return finished


def reward_functions(metric: str, options: dict[str, Any], limit: int, stops: set[int]) -> list[Callable]:
    return [*metric_rewards(metric, options), finished_reward(limit, stops)]
