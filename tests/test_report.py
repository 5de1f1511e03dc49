"""An experiment's targets: each goal is judged against the scores, met or missed, and a goal naming a score the
metric does not give is one clear line (how a goal is written is checked with the experiment file:
tests/test_bad_params.py)."""
from __future__ import annotations

import pytest

from tunepipe.errors import StageError
from tunepipe.reporting import target_table

METRICS = {"qa": {"before": {"recall": 0.0, "over": 0.0, "match": 33.64},
                  "after": {"recall": 87.73, "over": 61.36, "match": 35.29}}}


def test_targets_are_met_or_missed_against_numbers_and_the_zero_shot_score():
    lines = target_table({"qa": {"recall": ">= 90", "over": "<= 70", "match": "> before"}}, METRICS)
    rows = [line for line in lines if line.startswith("| [")]
    assert rows == ["| [qa](#qa) | recall | >= 90 | 0 | 87.73 | **missed** |",
                    "| [qa](#qa) | over | <= 70 | 0 | 61.36 | yes |",
                    "| [qa](#qa) | match | > before | 33.64 | 35.29 | yes |"]
    assert target_table({"qa": {"recall": ">= 87.73"}}, METRICS)[-2].endswith("| yes |")  # the bound is inclusive


def test_a_goal_can_judge_another_line_and_compare_with_the_rule():
    metrics = {"qa": {**METRICS["qa"], "rule": {"recall": 88.6, "over": 3.2},
                      "cascade": {"recall": 91.0, "over": 4.0, "match": 36.0}}}
    lines = target_table({"qa": {"cascade.recall": [">= 90", "> rule"], "cascade.over": "< rule",
                                 "cascade.match": "> before"}}, metrics)
    rows = [line for line in lines if line.startswith("| [")]
    assert rows == ["| [qa](#qa) | cascade.recall | >= 90 | 0 | 91 | yes |",
                    "| [qa](#qa) | cascade.recall | > rule (88.6) | 0 | 91 | yes |",
                    "| [qa](#qa) | cascade.over | < rule (3.2) | 0 | 4 | **missed** |",
                    "| [qa](#qa) | cascade.match | > before | 33.64 | 36 | yes |"]


def test_a_goal_for_a_score_the_metric_does_not_give_is_one_line_naming_its_key():
    with pytest.raises(StageError, match=r"^experiments/qa.yaml targets.rouge: qa has no score 'rouge' "
                                         r"\(it has recall, over, match\)$"):
        target_table({"qa": {"rouge": ">= 33"}}, METRICS)
