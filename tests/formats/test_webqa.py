"""WebQA reader: hand-checked rows, refusal templates, ratio and synthesis, every reject reason, bad inputs.

Hash choices below were worked out once from sha256(f"{salt}\\x00{id}") (stable_fraction's formula), not by
calling the reader, and are hard-coded, so a change of salt, key or rounding shows up as a failure.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tunepipe.conversion import convert
from tunepipe.errors import StageError
from tunepipe.files import write_jsonl
from tunepipe.ledger import Ledger
from tunepipe.splits import split_for
from tunepipe.formats import READERS
from tunepipe.formats.webqa import REFUSAL_TEMPLATES, read
from tests.conftest import REPO, bad_input, shared_file

PROMPT = "请根据给定下文：{evidence}\n告诉我{question}\n"


def ev(answer, text):
    return {"answer": answer, "evidence": text}


# 6 answerable, 2 no_answer evidences. stable_fraction(id, "webqa:sample") orders the answerable ones
# Q_T_3#0 .027 < Q_T_1#0 .037 < Q_T_2#0 .254 < Q_T_4#1 .506 < Q_T_4#0 .698 < Q_T_2#1 .879,
# and the refusals Q_T_1#1 .032 < Q_T_3#1 .387.
SMALL = {
    "Q_T_1": {"question": "中国的首都是哪里？", "evidences": {
        "Q_T_1#0": ev(["北京"], "北京是中国的首都，<e>也是全国的政治中心。"),
        "Q_T_1#1": ev(["no_answer"], "上海是一座港口城市。")}},
    "Q_T_2": {"question": "一周有几天？", "evidences": {
        "Q_T_2#0": ev(["七天"], "一周有七天。"), "Q_T_2#1": ev(["七天"], "一个星期是七天。")}},
    "Q_T_3": {"question": "水的化学式是什么？", "evidences": {
        "Q_T_3#0": ev(["H2O"], "水的化学式是H2O。"), "Q_T_3#1": ev(["no_answer"], "盐的主要成分是氯化钠。")}},
    "Q_T_4": {"question": "太阳从哪边升起？", "evidences": {
        "Q_T_4#0": ev(["东边"], "太阳每天从东边升起。"), "Q_T_4#1": ev(["东方", "东边", "东方"], "日出<e>东方。")}},
}


def write(folder: Path, files: dict[str, object]) -> Path:
    """Write raw files: a dict or list becomes JSON text, bytes are written as they are."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if not isinstance(data, (str, bytes)):
            data = json.dumps(data, ensure_ascii=False, indent=1)
        (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return folder


def run(raw_dir: Path, options: dict | None = None) -> tuple[dict[str, dict], Ledger]:
    ledger = Ledger("test")
    rows = {}
    for row in read(raw_dir, options or {}, ledger):
        assert row["id"] not in rows, f"reader yielded {row['id']} twice"
        rows[row["id"]] = row
    return rows, ledger


def small(tmp_path: Path, data: dict | None = None) -> Path:
    return write(tmp_path / "raw", {"webqa_small.json": data or SMALL})


def down_sampled(ledger: Ledger) -> list[str]:
    return sorted(r["where"].split("#", 1)[1] for r in ledger.dropped if r["reason"].startswith("down-sampled"))


# --- rows ------------------------------------------------------------------------------------------------

def test_answerable_row_exact(tmp_path):
    rows, ledger = run(small(tmp_path))
    assert rows["Q_T_1#0"] == {
        "id": "Q_T_1#0", "kind": "instruction",
        "instruction": "请根据给定下文：北京是中国的首都，也是全国的政治中心。\n告诉我中国的首都是哪里？\n",
        "input": "", "output": "北京", "answerable": True, "refusal_template": None, "answers": ["北京"],
        "synthesized": False, "refusal_kind": None, "question_id": "Q_T_1", "question": "中国的首都是哪里？",
        "evidence": "北京是中国的首都，也是全国的政治中心。", "group": "Q_T_1"}
    assert (ledger.read, len(rows), ledger.rejected) == (8, 8, [])


def test_pairs_are_the_same_rows_as_question_and_evidence_labelled(tmp_path):
    rows, _ = run(small(tmp_path))
    pairs, _ = run(small(tmp_path / "again"), {"rows": "pairs"})
    assert set(pairs) == set(rows)  # the same ids, so the same splits: a test question stays a test question
    pair = pairs["Q_T_1#0"]
    assert (pair["kind"], pair["text"], pair["text_pair"], pair["label"]) == (
        "labelled", "中国的首都是哪里？", "北京是中国的首都，也是全国的政治中心。", "answerable")
    assert {pairs[i]["label"] for i in pairs if not rows[i]["answerable"]} <= {"refuse"}
    assert "instruction" not in pair and pair["group"] == "Q_T_1"


def test_e_separator_is_a_space_between_words_and_nothing_beside_punctuation(tmp_path):
    data = {"Q": {"question": "问？", "evidences": {
        "Q#0": ev(["x"], "天安门<e>故宫"), "Q#1": ev(["x"], "天安门。 <e> 故宫<e>"), "Q#2": ev(["x"], "<e>12<e><e>34")}}}
    rows, _ = run(small(tmp_path, data))
    assert [rows[f"Q#{i}"]["instruction"] for i in range(3)] == [
        "请根据给定下文：天安门 故宫\n告诉我问？\n", "请根据给定下文：天安门。故宫\n告诉我问？\n",
        "请根据给定下文：12 34\n告诉我问？\n"]


def test_several_answers_are_joined_once_each_in_order(tmp_path):
    rows, _ = run(small(tmp_path))
    assert rows["Q_T_4#1"]["output"] == "东方；东边"
    assert rows["Q_T_4#1"]["answers"] == ["东方", "东边"]
    assert rows["Q_T_4#1"]["instruction"] == "请根据给定下文：日出 东方。\n告诉我太阳从哪边升起？\n"


def test_refusal_template_is_the_hand_computed_one(tmp_path):
    # stable_fraction("Q_T_1#1", "webqa:refusal") = 0.30998 -> index 3; "Q_T_3#1": 0.62985 -> index 6
    rows, _ = run(small(tmp_path))
    assert REFUSAL_TEMPLATES[0] == "根据提供的内容，我无法找到问题的相关信息" and len(REFUSAL_TEMPLATES) == 10
    assert (rows["Q_T_1#1"]["refusal_template"], rows["Q_T_1#1"]["output"]) == (3, "从这段文字里找不到该问题的答案")
    assert (rows["Q_T_3#1"]["refusal_template"], rows["Q_T_3#1"]["output"]) == (6, REFUSAL_TEMPLATES[6])
    assert rows["Q_T_1#1"]["answerable"] is False and rows["Q_T_1#1"]["answers"] == []
    assert rows["Q_T_1#1"]["instruction"] == "请根据给定下文：上海是一座港口城市。\n告诉我中国的首都是哪里？\n"


def test_refusal_templates_prompt_and_seed_options(tmp_path):
    raw = small(tmp_path)
    rows, _ = run(raw, {"refusal_templates": ["甲", "乙"], "prompt_template": "{question}|{evidence}"})
    assert [rows[i]["output"] for i in ("Q_T_1#1", "Q_T_3#1")] == ["甲", "乙"]  # int(.310*2)=0, int(.630*2)=1
    assert rows["Q_T_2#0"]["instruction"] == "一周有几天？|一周有七天。"
    rows, _ = run(raw, {"seed": "other"})  # "other:refusal" gives 0.0x and 0.2x
    assert [rows[i]["refusal_template"] for i in ("Q_T_1#1", "Q_T_3#1")] == [0, 2]


def test_choices_do_not_depend_on_file_or_dict_order(tmp_path):
    options = {"answerable_ratio": 1.0, "synthesize_refusals": 1}
    one, ledger_one = run(small(tmp_path / "a"), options)
    reversed_questions = {qid: {"question": q["question"], "evidences": dict(reversed(q["evidences"].items()))}
                          for qid, q in reversed(SMALL.items())}
    two_files = write(tmp_path / "b", {  # the same questions, reversed, split over two files
        "a_part.json": dict(list(reversed_questions.items())[:2]),
        "b_part.json": dict(list(reversed_questions.items())[2:])})
    two, ledger_two = run(two_files, options)
    assert one == two and len(one) == 6
    assert down_sampled(ledger_one) == down_sampled(ledger_two) == ["Q_T_2#1", "Q_T_4#0", "Q_T_4#1"]
    assert ledger_one.synthesized == ledger_two.synthesized == 1


def test_split_comes_from_the_file_name(tmp_path):
    raw = write(tmp_path / "raw", {"me_train.json": {"Q_T_1": SMALL["Q_T_1"]},
                                   "me_validation.ann.json": {"Q_T_2": SMALL["Q_T_2"]},
                                   "webqa_extra.json": {"Q_T_3": SMALL["Q_T_3"]}})
    rows, _ = run(raw)
    assert {i: r.get("split") for i, r in rows.items()} == {
        "Q_T_1#0": "train", "Q_T_1#1": "train", "Q_T_2#0": "validation", "Q_T_2#1": "validation",
        "Q_T_3#0": None, "Q_T_3#1": None}


# --- answerable_ratio and synthesize_refusals --------------------------------------------------------------

@pytest.mark.parametrize("ratio, kept_answerable", [
    (1.0, ["Q_T_1#0", "Q_T_3#0"]),                          # 2 refusals -> 2 answerable, smallest hashes
    (2.0, ["Q_T_1#0", "Q_T_2#0", "Q_T_3#0", "Q_T_4#1"]),    # 2 refusals -> 4 answerable
    (0.5, ["Q_T_3#0"]),                                     # 2 refusals -> 1 answerable
    (1.3, ["Q_T_1#0", "Q_T_2#0", "Q_T_3#0"]),               # 2 * 1.3 = 2.6 rounds to 3
    (0.2, ["Q_T_3#0"]),                                     # 2 * 0.2 = 0.4: a side never drops to 0
])
def test_ratio_down_samples_answerable_by_hash(tmp_path, ratio, kept_answerable):
    rows, ledger = run(small(tmp_path), {"answerable_ratio": ratio})
    assert sorted(i for i, r in rows.items() if r["answerable"]) == kept_answerable
    assert sorted(i for i, r in rows.items() if not r["answerable"]) == ["Q_T_1#1", "Q_T_3#1"]
    # down-sampled rows are dropped, not rejected: read = written + dropped, nothing counts as a reject
    assert (ledger.read, ledger.synthesized, ledger.rejected) == (8, 0, [])
    assert ledger.read == 8 == len(rows) + len(ledger.dropped)
    assert len(down_sampled(ledger)) == 6 - len(kept_answerable) == len(ledger.dropped)
    assert ledger.reasons(ledger.dropped) == {"down-sampled": 6 - len(kept_answerable)} and ledger.reasons() == {}
    assert {r["reason"] for r in ledger.dropped} == {
        f"down-sampled: answerable_ratio {ratio} keeps {len(kept_answerable)} of 6 answerable"}
    assert all(r["record"]["id"] == r["where"].split("#", 1)[1] for r in ledger.dropped)  # the row is kept


def test_ratio_down_samples_refusals_when_they_are_the_larger_side(tmp_path):
    rows, ledger = run(small(tmp_path), {"answerable_ratio": 6.0})  # 6 answerable want 1 refusal
    assert sorted(i for i, r in rows.items() if not r["answerable"]) == ["Q_T_1#1"]  # .032 < .387
    assert down_sampled(ledger) == ["Q_T_3#1"] and ledger.read == 8 and len(rows) == 7
    assert [r["reason"] for r in ledger.dropped] == ["down-sampled: answerable_ratio 6.0 keeps 1 of 2 refusals"]
    assert (ledger.synthesized, ledger.rejected) == (0, [])


def test_synthesis_fills_the_ratio_instead_of_down_sampling(tmp_path):
    # questions in "webqa:synth" order Q_T_4, Q_T_3, Q_T_2, Q_T_1; partners drawn with stable_choice over
    # the 8 evidences sorted by id: Q_T_4 -> own, then Q_T_2#1; Q_T_3 -> own, own, then Q_T_4#1;
    # Q_T_2 -> Q_T_4#0; Q_T_1 -> Q_T_3#1
    rows, ledger = run(small(tmp_path), {"answerable_ratio": 1.0, "synthesize_refusals": 10})
    made = sorted(i for i, r in rows.items() if r["synthesized"])
    assert made == ["Q_T_1#syn-Q_T_3#1", "Q_T_2#syn-Q_T_4#0", "Q_T_3#syn-Q_T_4#1", "Q_T_4#syn-Q_T_2#1"]
    # 6 answerable want 6 refusals: 4 made, none down-sampled; read counts raw evidences only
    assert (ledger.read, ledger.synthesized, ledger.rejected, ledger.dropped) == (8, 4, [], [])
    assert ledger.read + ledger.synthesized == 8 + 4 == len(rows)
    row = rows["Q_T_2#syn-Q_T_4#0"]
    assert row["instruction"] == "请根据给定下文：太阳每天从东边升起。\n告诉我一周有几天？\n"
    assert (row["answerable"], row["answers"], row["question_id"]) == (False, [], "Q_T_2")
    assert row["output"] == REFUSAL_TEMPLATES[row["refusal_template"]]
    assert sum(r["answerable"] for r in rows.values()) == sum(not r["answerable"] for r in rows.values()) == 6


def test_synthesis_budget_caps_it_and_the_ratio_down_samples_the_rest(tmp_path):
    rows, ledger = run(small(tmp_path), {"answerable_ratio": 1.0, "synthesize_refusals": 1})
    assert sorted(i for i, r in rows.items() if r["synthesized"]) == ["Q_T_4#syn-Q_T_2#1"]
    assert sorted(i for i, r in rows.items() if r["answerable"]) == ["Q_T_1#0", "Q_T_2#0", "Q_T_3#0"]
    # 6 answerable, 2 + 1 refusals: 3 answerable dropped (largest hashes), none rejected
    assert (ledger.read, ledger.synthesized, ledger.rejected, len(rows)) == (8, 1, [], 6)
    assert down_sampled(ledger) == ["Q_T_2#1", "Q_T_4#0", "Q_T_4#1"]
    assert ledger.read + ledger.synthesized == 9 == len(rows) + len(ledger.dropped)


def test_synthesis_with_a_ratio_makes_only_what_the_ratio_lacks(tmp_path):
    rows, ledger = run(small(tmp_path), {"answerable_ratio": 2.0, "synthesize_refusals": 10})  # 6:2 wants 3
    assert sorted(i for i, r in rows.items() if r["synthesized"]) == ["Q_T_4#syn-Q_T_2#1"]
    assert (ledger.read, ledger.synthesized, len(rows), ledger.rejected, ledger.dropped) == (8, 1, 9, [], [])


def test_synthesis_without_a_ratio_adds_exactly_the_budget(tmp_path):
    rows, ledger = run(small(tmp_path), {"synthesize_refusals": 2})
    assert sorted(i for i, r in rows.items() if r["synthesized"]) == ["Q_T_3#syn-Q_T_4#1", "Q_T_4#syn-Q_T_2#1"]
    assert (ledger.read, ledger.synthesized, len(rows), ledger.rejected, ledger.dropped) == (8, 2, 10, [], [])
    assert all(r["synthesized"] is False for i, r in rows.items() if "#syn-" not in i)


@pytest.mark.parametrize("change", ["partner holds our answer", "partner asks the same question"])
def test_synthesis_redraws_a_partner_that_might_answer(tmp_path, change):
    data = json.loads(json.dumps(SMALL))
    if change == "partner holds our answer":
        data["Q_T_4"]["evidences"]["Q_T_4#0"]["evidence"] = "太阳七天里每天都从东边升起。"  # holds 七天
    else:
        data["Q_T_4"]["question"] = "一周有几天？"
    rows, _ = run(small(tmp_path, data), {"synthesize_refusals": 4})
    # Q_T_2's draws: Q_T_4#0 (unfit now), Q_T_2#0 (its own), then Q_T_3#1
    assert [i for i in rows if i.startswith("Q_T_2#syn-")] == ["Q_T_2#syn-Q_T_3#1"]


def test_synthesis_partner_stays_in_its_split(tmp_path):
    raw = write(tmp_path / "raw", {"me_train.json": {k: SMALL[k] for k in ("Q_T_1", "Q_T_2")},
                                   "me_test.json": {k: SMALL[k] for k in ("Q_T_3", "Q_T_4")}})
    rows, _ = run(raw, {"synthesize_refusals": 4})
    made = [r for r in rows.values() if r["synthesized"]]
    assert len(made) == 4
    for row in made:
        partner = row["id"].split("#syn-")[1]
        assert rows[partner]["split"] == row["split"] and rows[partner]["question_id"] != row["question_id"]


def test_auto_synthesis_makes_what_the_ratio_lacks_and_nothing_without_one(tmp_path):
    rows, ledger = run(small(tmp_path), {"answerable_ratio": 1.0, "synthesize_refusals": "auto"})
    # the same four as an ample budget of 10 (above): 6 answerable want 6 refusals, 2 exist
    assert sorted(i for i, r in rows.items() if r["synthesized"]) == [
        "Q_T_1#syn-Q_T_3#1", "Q_T_2#syn-Q_T_4#0", "Q_T_3#syn-Q_T_4#1", "Q_T_4#syn-Q_T_2#1"]
    assert (ledger.synthesized, ledger.dropped) == (4, [])
    with pytest.raises(StageError, match="synthesize_refusals: auto makes what answerable_ratio lacks"):
        run(small(tmp_path), {"synthesize_refusals": "auto"})  # no ratio: nothing to fill, say so


def test_synthesized_refusals_never_pair_questions_of_different_splits(tmp_path, monkeypatch):
    """A file that names no split is split by convert, by the hash of the question: a refusal must take its
    evidence from a question that lands in the same split, or a test question's evidence reaches training."""
    monkeypatch.setitem(READERS, "webqa", "tunepipe.formats.webqa")
    params = {"format": "webqa", "split": {"train": 0.5, "test": 0.5},
              "options": {"answerable_ratio": 1.0, "synthesize_refusals": "auto"}}
    by_split = convert(small(tmp_path), params, Ledger("convert webqa"))
    split_of = {row["id"]: split for split, rows in by_split.items() for row in rows}
    made = [row for rows in by_split.values() for row in rows if row["synthesized"]]
    assert made
    for row in made:
        partner = row["id"].split("#syn-")[1]
        assert split_of[partner] == row["split"]
    # without convert's placing, the reader pools the whole file and some pairs do cross: the case above
    # is a real one on this data
    rows, _ = run(small(tmp_path), params["options"])
    lands = {qid: split_for(qid, params["split"]) for qid in SMALL}
    assert any(lands[row["question_id"]] != lands[rows[row["id"].split("#syn-")[1]]["question_id"]]
               for row in rows.values() if row["synthesized"])


def converted(raw: Path, options: dict) -> tuple[dict[str, list], Ledger]:
    ledger = Ledger("convert webqa")
    return convert(raw, {"format": "webqa", "options": options}, ledger), ledger


def test_options_that_leave_out_most_good_records_fail_the_ledger_check(tmp_path):
    _, ledger = converted(small(tmp_path), {"answerable_ratio": 0.2})  # keeps 1 of 6 answerable
    with pytest.raises(StageError, match=re.escape(
            "the options leave out 5 of 8 good records (62%, limit max_drop_rate 50%): down-sampled: "
            "answerable_ratio 0.2 keeps 1 of 6 answerable")):
        ledger.check(0.01)
    ledger.check(0.01, max_drop_rate=0.7)  # a user who means it says so
    _, ledger = converted(small(tmp_path), {"answerable_ratio": 1.0})  # 4 of 8 dropped: exactly the limit
    ledger.check(0.01)


def test_real_webqa_with_the_default_params_keeps_every_answerable_question():
    """The project's default options (params.yaml) on a real WebQA part of 2,049 answerable questions."""
    import yaml

    raw = shared_file("webqa")
    options = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["datasets"]["webqa"]["options"]
    answerable_raw = sum(
        1 for path in sorted(raw.glob("*.json")) for entry in json.loads(path.read_text(encoding="utf-8")).values()
        for evidence in entry["evidences"].values() if evidence["answer"] != ["no_answer"])
    by_split, ledger = converted(raw, options)
    rows = [row for split in by_split.values() for row in split]
    answerable = sum(r["answerable"] for r in rows)
    assert answerable == answerable_raw > 1000 and ledger.dropped == [] and ledger.rejected == []
    assert sum(not r["answerable"] for r in rows) == answerable  # balanced, 1:1
    ledger.check(0.01)


def test_ratio_that_cannot_be_met_is_an_error(tmp_path):
    only_answerable = {"Q_T_2": SMALL["Q_T_2"]}
    with pytest.raises(StageError, match="answerable_ratio 1.0 cannot be met: 2 answerable, 0 refusal"):
        run(small(tmp_path, only_answerable), {"answerable_ratio": 1.0})


@pytest.mark.parametrize("options, message", [
    ({"answerable_ration": 1.0}, "unknown ['answerable_ration']"),
    ({"prompt_template": "{evidence} {foo}"}, "prompt_template may use only"),
    ({"refusal_templates": []}, "refusal_templates must be"),
    ({"refusal_templates": "不知道"}, "refusal_templates must be"),
    ({"answerable_ratio": 0}, "answerable_ratio must be a number > 0"),
    ({"answerable_ratio": "1"}, "answerable_ratio must be a number > 0"),
    ({"synthesize_refusals": -1}, "synthesize_refusals must be an integer"),
    ({"synthesize_refusals": True}, "synthesize_refusals must be an integer"),
    ({"synthesize_refusals": "many"}, "synthesize_refusals must be an integer >= 0 or auto, got 'many'"),
])
def test_bad_options_stop_before_reading(tmp_path, options, message):
    with pytest.raises(StageError, match=re.escape(message)):
        run(small(tmp_path), options)


# --- the ledger through the real convert stage ------------------------------------------------------------

def test_convert_balances_with_synthesized_and_down_sampled_rows(tmp_path, monkeypatch):
    monkeypatch.setitem(READERS, "webqa", "tunepipe.formats.webqa")
    params = {"format": "webqa", "options": {"answerable_ratio": 1.0, "synthesize_refusals": 1}}
    ledger = Ledger("convert webqa")
    by_split = convert(small(tmp_path), params, ledger)
    summary = ledger.summary()
    # 8 evidences + 1 synthesized refusal = 6 written (3 answerable, 3 refusals) + 3 answerable dropped
    assert (summary["read"], summary["synthesized"], summary["written"], summary["rejected"],
            summary["dropped"]) == (8, 1, 6, 0, 3)
    assert (summary["rejected_by_reason"], summary["dropped_by_reason"]) == ({}, {"down-sampled": 3})
    assert summary["read"] + summary["synthesized"] == summary["written"] + summary["rejected"] + summary["dropped"]
    assert sum(len(rows) for rows in by_split.values()) == 6
    ledger.check(max_reject_rate=0.01)  # balances, and down-sampled rows are not rejects

    # a real reject still counts: one more evidence without an answer, the rest as before
    data = {**SMALL, "Q_T_5": {"question": "没有答案？", "evidences": {"Q_T_5#0": {"evidence": "没有答案字段"}}}}
    ledger = Ledger("convert webqa")
    by_split = convert(small(tmp_path / "bad", data), params, ledger)
    summary = ledger.summary()
    assert (summary["read"], summary["synthesized"], summary["written"], summary["rejected"],
            summary["dropped"]) == (9, 1, 6, 1, 3)  # 9 + 1 = 6 + 1 + 3
    assert (summary["rejected_by_reason"], summary["dropped_by_reason"]) == ({"missing field": 1}, {"down-sampled": 3})
    with pytest.raises(StageError, match=re.escape("11.1% of records rejected (limit 1.0%); first: "
                                                   "webqa_small.json#Q_T_5#0: missing field: answer")):
        ledger.check(max_reject_rate=0.01)  # 1 rejected of 9 read
    ledger.check(max_reject_rate=0.12)  # balances


def test_sample_data_reads_clean_and_converts(monkeypatch):
    rows, ledger = run(REPO / "data" / "samples" / "webqa")
    assert (len(rows), ledger.read, ledger.synthesized, ledger.rejected, ledger.dropped) == (36, 36, 0, [], [])
    assert sum(r["answerable"] for r in rows.values()) == 20
    assert all("<e>" not in r["instruction"] for r in rows.values())
    monkeypatch.setitem(READERS, "webqa", "tunepipe.formats.webqa")
    ledger = Ledger("convert webqa")
    convert(REPO / "data" / "samples" / "webqa", {"format": "webqa"}, ledger)
    ledger.check(max_reject_rate=0.01)


# --- rejects -----------------------------------------------------------------------------------------------

def test_each_reject_reason_names_its_evidence(tmp_path):
    data = {"Q_A": {"question": "问题？", "evidences": {
        "Q_A#0": ev(["答"], "好的证据。"), "Q_A#1": {"evidence": "没有答案字段"}, "Q_A#2": ev(["答"], "  <e>  "),
        "Q_A#3": ev("答", "答案不是列表"), "Q_A#4": ev(["no_answer", "答"], "自相矛盾")}},
        "Q_B": {"question": "", "evidences": {"Q_B#0": ev(["答"], "问题是空的")}},
        "Q_C": {"question": "没有证据？"}, "Q_D": "不是对象"}
    rows, ledger = run(small(tmp_path, data))
    assert list(rows) == ["Q_A#0"]
    assert {r["where"]: r["reason"].split(":")[0] for r in ledger.rejected} == {
        "webqa_small.json#Q_A#1": "missing field", "webqa_small.json#Q_A#2": "empty text",
        "webqa_small.json#Q_A#3": "wrong type", "webqa_small.json#Q_A#4": "conflicting answer",
        "webqa_small.json#Q_B#0": "empty text", "webqa_small.json#Q_C": "missing field",
        "webqa_small.json#Q_D": "wrong type"}
    assert ledger.read == 8


def test_ids_that_are_not_utf8_or_empty_are_rejected(tmp_path):
    raw = write(tmp_path / "raw", {"webqa_ids.json": b'{"Q\xd6\xd0": {"question": "q?", "evidences": {'
                                                     b'"Q\xd6\xd0#0": {"answer": ["a"], "evidence": "e"}}},'
                                                     b' "Q2": {"question": "q?", "evidences": {'
                                                     b'"": {"answer": ["a"], "evidence": "e"}, '
                                                     b'"Q2#1": {"answer": ["a"], "evidence": "e"}}}}'})
    rows, ledger = run(raw)
    assert list(rows) == ["Q2#1"]
    assert [(r["where"], r["reason"]) for r in ledger.rejected] == [
        ("webqa_ids.json#Q\\xd6\\xd0#0", "wrong encoding: question id is not UTF-8 at character 1 (GBK?)"),
        ("webqa_ids.json#", "empty text: evidence id")]


def test_truncated_file_is_an_error_naming_file_and_position(tmp_path):
    text = json.dumps(SMALL, ensure_ascii=False, indent=1)
    raw = write(tmp_path / "raw", {"me_train.json": text[:300]})
    with pytest.raises(StageError, match=r"me_train\.json: malformed JSON at line \d+ column \d+ \(char \d+\)"):
        run(raw)


def test_gbk_file_rejects_only_its_non_utf8_text_and_the_rejects_file_can_be_written(tmp_path):
    rows, ledger = run(bad_input("webqa/gbk_encoding", tmp_path))
    assert list(rows) == ["Q_BAD_000003#00"]  # the one all-ASCII question survives
    assert {r["reason"].split(" at ")[0] for r in ledger.rejected} == {"wrong encoding: question is not UTF-8"}
    write_jsonl(tmp_path / "rejects.jsonl", ledger.rejected)  # strict UTF-8: raw bytes shown as \xNN
    assert "\\\\xd6\\\\xd0" in (tmp_path / "rejects.jsonl").read_text(encoding="utf-8")  # 中 in GBK


def test_no_json_files_is_an_error(tmp_path):
    raw = write(tmp_path / "raw", {"notes.txt": "not data"})
    with pytest.raises(StageError, match="no WebQA .json files"):
        run(raw)
