"""WebQA's made refusal rows: hard negatives cut from the question's own evidence, beside swaps, each row tagged
with its kind; and the rows as DPO pairs. Expected texts are worked out by hand from the rule in
tunepipe/formats/webqa_refusals.py, not by calling it."""
from __future__ import annotations

import pytest

from tunepipe.errors import StageError
from tests.formats.test_webqa import PROMPT, ev, run, small

HARD = {
    "Q_H_1": {"question": "长江有多长？", "evidences": {  # the first sentence goes, 20 letters are left
        "Q_H_1#0": ev(["六千三百公里"], "长江全长约六千三百公里。它发源于青藏高原的唐古拉山脉，<e>最后注入东海。")}},
    "Q_H_2": {"question": "珠穆朗玛峰有多高？", "evidences": {  # its one sentence holds the answer: nothing left
        "Q_H_2#0": ev(["8848米"], "珠穆朗玛峰海拔8848米。")}},
    "Q_H_3": {"question": "一年有多少个节气？", "evidences": {  # the answer spans a snippet cut: no piece holds
        "Q_H_3#0": ev(["二十四个"], "一年分为二十<e>四个节气，立春是第一个节气，春分和秋分昼夜几乎等长。")}},
    "Q_H_4": {"question": "太阳从哪边升起？", "evidences": {  # 2 letters left
        "Q_H_4#0": ev(["东边"], "太阳从东边升起。很热。")}},
    "Q_H_5": {"question": "月球上有水吗？", "evidences": {  # the release's own refusal; no answer anywhere
        "Q_H_5#0": ev(["no_answer"], "火星是太阳系的第四颗行星，表面呈红色。")}},
}
LEFT = "它发源于青藏高原的唐古拉山脉，最后注入东海。"  # "，<e>" next to punctuation: the cut just goes


def kinds(rows: dict[str, dict]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for row_id, row in sorted(rows.items()):
        found.setdefault(str(row["refusal_kind"]), []).append(row_id)
    return found


def test_a_hard_negative_is_the_own_evidence_with_every_answer_sentence_cut(tmp_path):
    rows, ledger = run(small(tmp_path, HARD), {"hard_negatives": 5})
    assert kinds(rows) == {"None": ["Q_H_1#0", "Q_H_2#0", "Q_H_3#0", "Q_H_4#0"], "given": ["Q_H_5#0"],
                           "hard_negative": ["Q_H_1#0#hard"]}
    row = rows["Q_H_1#0#hard"]
    assert row["evidence"] == LEFT and row["instruction"] == PROMPT.format(evidence=LEFT, question="长江有多长？")
    assert (row["answerable"], row["answers"], row["synthesized"], row["question_id"], row["group"]) == (
        False, [], True, "Q_H_1", "Q_H_1")
    assert (ledger.read, ledger.synthesized, ledger.rejected, ledger.dropped) == (5, 1, [], [])
    assert rows["Q_H_5#0"]["synthesized"] is False


@pytest.mark.parametrize("least, made", [(20, ["Q_H_1#0#hard"]), (21, []), (2, ["Q_H_1#0#hard", "Q_H_4#0#hard"])])
def test_a_hard_negative_keeps_at_least_the_minimum_of_letters(tmp_path, least, made):
    rows, _ = run(small(tmp_path, HARD), {"hard_negatives": 5, "hard_negative_min_chars": least})
    assert kinds(rows).get("hard_negative", []) == made


def test_hard_negatives_come_first_and_swaps_fill_what_the_ratio_lacks(tmp_path):
    data = {qid: entry for qid, entry in HARD.items() if qid != "Q_H_5"}  # 4 answerable, no refusal
    rows, ledger = run(small(tmp_path, data), {"answerable_ratio": 1.0, "hard_negatives": "auto",
                                               "synthesize_refusals": "auto"})
    found = kinds(rows)
    assert found["hard_negative"] == ["Q_H_1#0#hard"] and len(found["swap"]) == 3
    assert all(rows[i]["synthesized"] and "#syn-" in i for i in found["swap"])
    assert (ledger.read, ledger.synthesized, ledger.dropped) == (4, 4, [])
    none, _ = run(small(tmp_path, data), {"answerable_ratio": 1.0, "synthesize_refusals": "auto"})
    assert "hard_negative" not in kinds(none)  # off unless asked: the default keeps earlier data as it was


def test_preference_rows_set_the_answer_against_a_refusal_and_back(tmp_path):
    rows, ledger = run(small(tmp_path, HARD), {"rows": "preference", "hard_negatives": 1,
                                               "refusal_templates": ["无法回答"]})
    answered, hard = rows["Q_H_1#0"], rows["Q_H_1#0#hard"]
    assert answered["kind"] == hard["kind"] == "preference"
    assert answered["prompt"] == [{"role": "user", "content": PROMPT.format(
        evidence="长江全长约六千三百公里。它发源于青藏高原的唐古拉山脉，最后注入东海。", question="长江有多长？")}]
    assert (answered["chosen"], answered["rejected"]) == ([{"role": "assistant", "content": "六千三百公里"}],
                                                          [{"role": "assistant", "content": "无法回答"}])
    assert (hard["chosen"], hard["rejected"]) == ([{"role": "assistant", "content": "无法回答"}],
                                                  [{"role": "assistant", "content": "六千三百公里"}])
    assert (hard["answers"], hard["refusal_kind"], answered["answers"]) == ([], "hard_negative", ["六千三百公里"])
    assert "output" not in hard and "instruction" not in hard
    # the release's refusal of a question with no answer anywhere: nothing to set against it, kept with why
    assert "Q_H_5#0" not in rows and [r["reason"] for r in ledger.dropped] == [
        "no preference pair: the question has no answer in the input to set against its refusal"]
    assert ledger.read + ledger.synthesized == len(rows) + len(ledger.dropped) == 6


@pytest.mark.parametrize("options, message", [
    ({"hard_negatives": -1}, "hard_negatives must be an integer >= 0 or auto, got -1"),
    ({"hard_negatives": "auto"}, "hard_negatives: auto makes what answerable_ratio lacks"),
    ({"hard_negative_min_chars": "auto"}, "hard_negative_min_chars must be an integer >= 0, got 'auto'"),
    ({"rows": "pairz"}, "rows is instructions, pairs or preference, got 'pairz'"),
])
def test_bad_refusal_options_stop_before_any_work(tmp_path, options, message):
    with pytest.raises(StageError, match=message):
        run(small(tmp_path, HARD), options)
