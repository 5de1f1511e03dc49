"""report.targets: each goal is judged against the scores, met or missed, and a bad goal is one clear line."""
from __future__ import annotations

import pytest

from stages.common import StageError
from stages.report import target_table

METRICS = {"qa": {"before": {"recall": 0.0, "over": 0.0, "match": 33.64},
                  "after": {"recall": 87.73, "over": 61.36, "match": 35.29}}}


def test_targets_are_met_or_missed_against_numbers_and_the_zero_shot_score():
    lines = target_table({"qa": {"recall": ">= 90", "over": "<= 70", "match": "> before"},
                          "left-out-by-only": {"f1": ">= 0.65"}}, METRICS)
    rows = [line for line in lines if line.startswith("| [")]
    assert rows == ["| [qa](#qa) | recall | >= 90 | 0 | 87.73 | **missed** |",
                    "| [qa](#qa) | over | <= 70 | 0 | 61.36 | yes |",
                    "| [qa](#qa) | match | > before | 33.64 | 35.29 | yes |"]
    assert target_table({"qa": {"recall": ">= 87.73"}}, METRICS)[-2].endswith("| yes |")  # the bound is inclusive


@pytest.mark.parametrize("goal, message", [
    ({"recall": "at least 90"}, r"report.targets.qa.recall: 'at least 90' is not '<op> <number>'"),
    ({"recall": ">= ninety"}, r"report.targets.qa.recall: 'ninety' is neither a number nor 'before'"),
    ({"rouge": ">= 33"}, r"report.targets.qa.rouge: qa has no score 'rouge' \(it has recall, over, match\)"),
])
def test_a_bad_goal_is_one_line_naming_its_key(goal, message):
    with pytest.raises(StageError, match=message):
        target_table({"qa": goal}, METRICS)
