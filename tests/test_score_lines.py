"""The extra lines of a score table on the same rows: the overlap rule (no training) and a cascade (a gate
experiment's refusals in front of the generator), hand-checked; and a pair head's prediction from both
orders of a sentence pair."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stages import predict as predict_stage
from tunepipe.prediction import classify
from stages import config as config_stage
from stages import score as score_stage
from tunepipe.errors import StageError
from tunepipe.files import write_json, write_jsonl
from tests.test_kinds import workspace
from tests.workspace import edit, inside, write_experiment, write_yaml

REFUSE = "无法回答"
ROWS = [  # question, evidence, answers ([]: the evidence does not answer)
    ("a1", "中国的首都是哪里", "北京是中国的首都", ["北京"]),          # 5 of 7 question characters in the evidence
    ("a2", "长江有多长", "长江全长六千三百公里", ["六千三百公里"]),      # 2 of 5: 40%
    ("r1", "中国的首都是哪里", "熊猫吃竹子", []),                       # 0 of 7
    ("r2", "长江有多长", "黄河长五千公里", []),                         # 1 of 5 (长): 20%
]


def webqa_workspace(root: Path, gate: bool, answer_anyway: bool = False) -> str:
    write_yaml(root / "params.yaml", {"datasets": {"qa": {"path": "raw", "format": "webqa"}},
                                      "models": {"tiny": {"path": "tiny"}}})
    write_jsonl(root / "data/converted/qa/test.jsonl", [
        {"id": i, "kind": "instruction", "instruction": f"{e}\n{q}", "input": "", "output": a[0] if a else REFUSE,
         "answers": a, "question": q, "evidence": e} for i, q, e, a in ROWS])
    write_json(root / "data/converted/qa/labels.json", [])
    score = {"refusal_phrases": [REFUSE], "rule": {"overlap_below": 0.3}}
    if gate:
        score["gate"] = {"experiment": "qa-gate", "refuse": "refuse"}
    # the generator alone: answers a1, refuses a2 (over-refusal), answers r1 (missed), refuses r2
    after = {"a1": "北京", "a2": REFUSE, "r1": "北京", "r2": REFUSE}
    # predict.answer_anyway: the rows the generator refused, answered again past the refusal (a2 right, r2 wrong)
    again = {"a1": "北京", "a2": "六千三百公里", "r1": "北京", "r2": "五千公里"} if answer_anyway else {}
    for which, answers in (("before", {i: "不知道" for i in after}), ("after", after)):
        write_jsonl(root / f"data/predictions/qa/{which}.jsonl", [
            {"id": i, "prediction": answers[i], **({"answer": again[i]} if which == "after" and again else {}),
             "reference": a} for i, _, _, a in ROWS])
    # the gate: refuses r1 and r2, lets a1 and a2 through
    write_jsonl(root / "data/predictions/qa-gate/after.jsonl", [
        {"id": i, "prediction": "refuse" if not a else "answerable", "reference": "x"} for i, _, _, a in ROWS])
    return write_experiment(root, "qa", {"dataset": "qa", "model": "tiny", "kind": "causal_lm", "method": "lora",
                                         "metric": "refusal", "score": score})


def test_the_rule_and_the_cascade_are_scored_on_the_same_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    score_stage.main([webqa_workspace(tmp_path, gate=True)])
    scores = json.loads(Path("reports/metrics/qa.json").read_text())
    # generator alone: refused a2, r2: precision 1/2, recall 1/2, over-refusal 1/2, answer match 1/1 (a1)
    assert (scores["after"]["refusal_recall"], scores["after"]["over_refusal_rate"]) == (50.0, 50.0)
    # rule at 30%: refuses r1 (0%) and r2 (20%), not a1 (71%) nor a2 (40%): recall 100, over-refusal 0
    assert scores["rule"] == {"refusal_precision": 100.0, "refusal_recall": 100.0, "over_refusal_rate": 0.0,
                              "rows": 4, "should_refuse": 2, "refused": 2}
    # cascade: the gate refuses r1, r2; a1 and a2 get the generator's answers (a2 its refusal)
    assert (scores["cascade"]["refusal_recall"], scores["cascade"]["over_refusal_rate"]) == (100.0, 50.0)
    assert scores["cascade"]["answer_match"] == 100.0


def test_each_line_reports_refusal_recall_per_kind_of_the_test_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = webqa_workspace(tmp_path, gate=True)
    kinds = {"a1": None, "a2": None, "r1": "swap", "r2": "hard_negative"}
    test = Path("data/converted/qa/test.jsonl")
    write_jsonl(test, [{**json.loads(line), "refusal_kind": kinds[json.loads(line)["id"]]}
                       for line in test.read_text().splitlines()])
    edit(Path(f"experiments/{name}.yaml"), "score.kind_field", "refusal_kind")
    config_stage.main([name])
    score_stage.main([name])
    scores = json.loads(Path("reports/metrics/qa.json").read_text())
    # the generator answers r1 (a swap) and refuses r2 (a hard negative); the rule and the gate refuse both
    per_kind = {line: (scores[line]["refusal_recall_swap"], scores[line]["refusal_recall_hard_negative"])
                for line in ("before", "after", "rule", "cascade")}
    assert per_kind == {"before": (0.0, 0.0), "after": (0.0, 100.0), "rule": (100.0, 100.0),
                        "cascade": (100.0, 100.0)}
    assert scores["gain"]["refusal_recall_hard_negative"] == 100.0
    edit(Path(f"experiments/{name}.yaml"), "score.kind_field", "kind_of_row")
    config_stage.main([name])
    with pytest.raises(StageError, match=r"score.kind_field: test row a1 has no field 'kind_of_row'"):
        score_stage.main([name])


def test_the_cascade_answers_where_the_gate_lets_a_row_through_and_the_generator_alone_is_unchanged(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    score_stage.main([webqa_workspace(tmp_path, gate=True, answer_anyway=True)])
    scores = json.loads(Path("reports/metrics/qa.json").read_text())
    assert (scores["after"]["refusal_recall"], scores["after"]["over_refusal_rate"]) == (50.0, 50.0)
    # the gate refuses r1, r2; a2 now gets the answer past the generator's refusal: nothing over-refused
    assert (scores["cascade"]["refusal_recall"], scores["cascade"]["over_refusal_rate"]) == (100.0, 0.0)
    assert scores["cascade"]["answer_match"] == 100.0 and scores["cascade"]["answerable_not_refused"] == 2


def test_rows_that_open_with_a_refusal_are_answered_again_without_its_first_token(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.chdir(tmp_path)
    # the tiny GPT-Neo's greedy answers are varied text
    name = workspace(tmp_path, "gpt_neo", "causal_lm", "lora")
    from stages import tokenize as tokenize_stage

    tokenize_stage.main([name])

    def predict_with(**options) -> list[dict]:
        edit(Path(f"experiments/{name}.yaml"), "predict", {"batch_size": 2, "max_new_tokens": 6, **options})
        config_stage.main([name])
        predict_stage.main([name, "before"])
        return [json.loads(line) for line in Path(f"data/predictions/{name}/before.jsonl").read_text().splitlines()]

    greedy = predict_with()
    assert all("answer" not in row for row in greedy)
    tokenizer = AutoTokenizer.from_pretrained("models/base/tiny")
    opening = tokenizer.decode(tokenizer.encode(greedy[0]["prediction"])[:1]).strip()  # its first token: a "refusal"
    assert opening
    rows = predict_with(answer_anyway=[opening])
    assert [row["prediction"] for row in rows] == [row["prediction"] for row in greedy]  # what it said on its own
    refused = [row for row in rows if row["prediction"].startswith(opening)]
    assert refused and all(not row["answer"].startswith(opening) for row in refused)
    assert all(row["answer"] == row["prediction"] for row in rows if row not in refused)
    settings = json.loads(Path(f"data/predictions/{name}/before.settings.json").read_text())
    assert (settings["answer_anyway"], settings["answered_again"]) == ([opening], len(refused))


def test_both_orders_of_a_pair_average_the_head_s_probabilities(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from tunepipe.loading import load_base
    from tunepipe.settings import load_experiment

    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, "bert", "sequence_head", "full")
    from stages import tokenize as tokenize_stage

    tokenize_stage.main([name])
    edit(tmp_path / "experiments/toy.yaml", "predict.pair_orders", "both")
    with inside(tmp_path):
        from stages import config

        config.main([name])
    from tunepipe import prediction

    given_to_classify = []
    monkeypatch.setattr(prediction, "classify", lambda *args: given_to_classify.append(args) or classify(*args))
    predict_stage.main([name, "before"])
    rows = [json.loads(line) for line in Path(f"data/predictions/{name}/before.jsonl").read_text().splitlines()]
    assert json.loads(Path(f"data/predictions/{name}/before.settings.json").read_text())["pair_orders"] == "both"
    # by hand: the same seeded new head, each pair in both orders, probabilities averaged
    from transformers import set_seed

    set_seed(load_experiment(name, "predict")["seed"])
    model = load_base("sequence_head", Path("models/base/tiny"), labels=["no", "yes"]).eval()
    tokenizer = AutoTokenizer.from_pretrained("models/base/tiny")
    records = {json.loads(line)["id"]: json.loads(line)
               for line in Path("data/converted/toy/test.jsonl").read_text().splitlines()}
    for row in rows:
        record = records[row["id"]]
        with torch.no_grad():
            probs = [model(**tokenizer(a, b, return_tensors="pt")).logits.softmax(-1)
                     for a, b in ((record["text"], record["text_pair"]), (record["text_pair"], record["text"]))]
        assert row["prediction"] == ["no", "yes"][int((probs[0] + probs[1]).argmax())]
    # the tiny head agrees with itself in either order on these rows, so the labels alone cannot show that
    # both orders were read: the stage must hand classify each pair the other way round, as tokenized here
    (_, _, given, _, _, swapped), = given_to_classify
    assert [row["id"] for row in swapped] == [row["id"] for row in given]
    assert [row["input_ids"] for row in swapped] == [
        tokenizer(records[row["id"]]["text_pair"], records[row["id"]]["text"])["input_ids"] for row in given]


def test_a_pair_s_label_is_the_best_of_both_orders_averaged():
    """With a head that leans weakly to `no` in one order and strongly to `yes` in the other, one order
    says no and the average says yes."""
    from tests.tiny_models import build_tokenizer

    class Head(torch.nn.Module):  # logits are the second and third token ids: order decides
        device = torch.device("cpu")

        def forward(self, input_ids, **kwargs):
            return type("Out", (), {"logits": input_ids[:, 1:3].float()})()

    given = [{"id": "p", "input_ids": [0, 5, 3], "prompt_length": 3}]    # no by 2
    swapped = [{"id": "p", "input_ids": [0, 1, 9], "prompt_length": 3}]  # yes by 8
    params = {"batch_size": 4}
    tokenizer = build_tokenizer("bert")
    assert classify(Head(), tokenizer, given, params, ["no", "yes"]) == {"p": "no"}
    assert classify(Head(), tokenizer, given, params, ["no", "yes"], swapped) == {"p": "yes"}
