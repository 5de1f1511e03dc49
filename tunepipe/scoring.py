"""Scoring predictions with the experiment's metric, and the extra lines on the same rows: a rule and a cascade.

Metrics are `evaluate` modules shipped in metrics/<name>/ and loaded by path (hub metric scripts cannot be
fetched offline); users can load the same modules in a notebook with `evaluate.load("metrics/<name>")`.
Each module's docstring defines its numbers.
- `rule`: a rule that needs no training, so a trained model can be judged against it. `overlap_below: t`
  refuses when under a share t of the question's content characters (letters, digits, CJK characters;
  no punctuation, spaces or symbols) occur in the evidence, and answers nothing otherwise (it only decides
  whether to refuse, so its answer match is left out).
- `gate`: a cascade: where the experiment named in `gate.experiment` (an answerable-or-not classifier of
  the same rows) predicts `gate.refuse`, the answer is the refusal `reply`; elsewhere, this model's.
- `kind_field`: the test rows' field that names each row's kind (WebQA's `refusal_kind`: given, swap,
  hard_negative); every line passes it to the metric as `kinds`, which reports its recall per kind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tunepipe.errors import StageError
from tunepipe.files import read_jsonl
from tunepipe.layout import METRICS_DIR
from tunepipe.settings import where as setting

LINE_OPTIONS = ("rule", "gate", "kind_field")  # the score stage's own options; the rest are the metric's

def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        raise StageError(f"{path}: not found (run dvc repro first)")
    rows = {row["id"]: row for row in read_jsonl(path)}
    if not rows:
        raise StageError(f"{path}: no predictions to score")
    return rows


def score_rows(metric, rows: list[dict[str, Any]], options: dict[str, Any]) -> dict[str, Any]:
    predictions = [row["prediction"] for row in rows]
    references = [row["reference"] for row in rows]
    return metric.compute(predictions=predictions, references=references, **options)


def content_characters(text: str) -> set[str]:
    import unicodedata

    return {char for char in text if unicodedata.category(char)[0] in "LN"}


def overlap_rule(records: dict[str, dict[str, Any]], ids: list[str], threshold: float, reply: str) -> dict[str, str]:
    """Refuse (the reply) where under `threshold` of the question's content characters are in the evidence."""
    answers = {}
    for row_id in ids:
        record = records[row_id]
        if "question" not in record or "evidence" not in record:
            raise StageError(f"score rule: test row {row_id} has no question and evidence fields (a WebQA row)")
        question = content_characters(record["question"])
        share = len(question & content_characters(record["evidence"])) / max(len(question), 1)
        answers[row_id] = reply if share < threshold else ""
    return answers


def test_records(setup: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in read_jsonl(Path("data/converted") / setup["dataset"] / "test.jsonl")}


def with_kinds(experiment: str, setup: dict, options: dict, ids: list[str]) -> dict[str, Any]:
    """The metric's options, with each row's kind where `kind_field` names the test rows' field holding it."""
    options = dict(options)
    field = options.pop("kind_field", None)
    if field is None:
        return options
    records = test_records(setup)
    unknown = next((i for i in ids if field not in records[i]), None)
    if unknown is not None:
        raise StageError(f"{setting(experiment, 'score')}.kind_field: test row {unknown} has no field {field!r}")
    return {**options, "kinds": [records[i][field] for i in ids]}


def extra_lines(experiment: str, setup: dict, lines_asked: dict, options: dict, after: dict, ids: list[str],
                metric) -> dict:
    """The rule's and the cascade's scores, as the metric gives them on the same rows."""
    rule, gate = lines_asked.get("rule"), lines_asked.get("gate")
    if not rule and not gate:
        return {}
    reply = (options.get("refusal_phrases") or [None])[0]
    if reply is None:
        raise StageError(f"{setting(experiment, 'score')}: rule and gate answer with the first of refusal_phrases")
    lines = {}
    if rule:
        made = overlap_rule(test_records(setup), ids, float(rule["overlap_below"]), reply)
        rows = [{"prediction": made[i], "reference": after[i]["reference"]} for i in ids]
        scored = score_rows(metric, rows, options)
        lines["rule"] = {k: v for k, v in scored.items() if k not in ("answer_match", "answerable_not_refused")}
    if gate:
        gated = read_predictions(Path("data/predictions") / gate["experiment"] / "after.jsonl")
        missing = sorted(set(ids) - set(gated))
        if missing:
            raise StageError(f"{setting(experiment, 'score')}.gate: {gate['experiment']} has no prediction for "
                             f"{len(missing)} test rows (first {missing[0]}): it must predict the same rows")
        # where the gate lets a row through, the generator's answer past its own refusal (predict.answer_anyway)
        rows = [{"prediction": reply if gated[i]["prediction"] == gate["refuse"]
                 else after[i].get("answer", after[i]["prediction"]), "reference": after[i]["reference"]} for i in ids]
        lines["cascade"] = score_rows(metric, rows, options)
    return lines


def score_both(experiment: str, setup: dict[str, Any], options: dict[str, Any], before: dict, after: dict) -> dict:
    """Before, after, their gain (after minus before, for every score) and the extra lines, on the same rows."""
    import evaluate

    metric = evaluate.load(str(METRICS_DIR / setup["metric"]))
    ids = sorted(before)
    lines_asked = {line: options[line] for line in ("rule", "gate") if options.get(line)}
    options = with_kinds(experiment, setup, {k: v for k, v in options.items() if k not in ("rule", "gate")}, ids)
    try:
        extra = extra_lines(experiment, setup, lines_asked, options, after, ids, metric)
        scores = {which: score_rows(metric, [rows[i] for i in ids], options)
                  for which, rows in (("before", before), ("after", after))}
    except (TypeError, ValueError) as err:  # an option the metric does not take, or a bad value for one
        raise StageError(f"{setting(experiment, 'score')}: {err}") from None
    scores["gain"] = {name: round(scores["after"][name] - value, 4)
                      for name, value in scores["before"].items() if isinstance(value, float)}
    return {"rows": len(ids), **scores, **extra}
