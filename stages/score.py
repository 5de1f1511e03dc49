"""score: before and after predictions through the experiment's metric -> reports/metrics/<experiment>.json.

Metrics are `evaluate` modules shipped in metrics/<name>/ and loaded by path (hub metric scripts cannot be
fetched offline); users can load the same modules in a notebook with `evaluate.load("metrics/<name>")`.
Each module's docstring defines its numbers. The experiment's `score:` holds the metric's options
(verbaliser synonyms, refusal phrases, stemming), passed to `compute` as they are. Both predictions must
cover the same rows, which this stage checks; `gain` is after minus before for every score.

Two more lines of the same table, on the same rows and by the same metric, where the experiment asks:
- `rule`: a rule that needs no training, so a trained model can be judged against it. `overlap_below: t`
  refuses when under a share t of the question's content characters (letters, digits, CJK characters;
  no punctuation, spaces or symbols) occur in the evidence, and answers nothing otherwise (it only decides
  whether to refuse, so its answer match is left out).
- `gate`: a cascade: where the experiment named in `gate.experiment` (an answerable-or-not classifier of
  the same rows) predicts `gate.refuse`, the answer is the refusal `reply`; elsewhere, this model's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from stages.common import CODE_ROOT, StageError, one_item, read_jsonl, read_labels, run_stage, write_json
from stages.settings import load_experiment, where as setting

METRICS_DIR = CODE_ROOT / "metrics"


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


def extra_lines(experiment: str, setup: dict, options: dict, after: dict, ids: list[str], metric) -> dict:
    """The rule's and the cascade's scores, as the metric gives them on the same rows."""
    rule, gate = options.pop("rule", None), options.pop("gate", None)
    if not rule and not gate:
        return {}
    reply = (options.get("refusal_phrases") or [None])[0]
    if reply is None:
        raise StageError(f"{setting(experiment, 'score')}: rule and gate answer with the first of refusal_phrases")
    lines = {}
    if rule:
        records = {r["id"]: r for r in read_jsonl(Path("data/converted") / setup["dataset"] / "test.jsonl")}
        made = overlap_rule(records, ids, float(rule["overlap_below"]), reply)
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


def main(argv: list[str]) -> None:
    experiment = one_item(argv, "score")
    setup = load_experiment(experiment, "score")
    options = dict(setup.pop("score", None) or {})
    if setup["metric"] == "label_match":  # a head may predict a label that no test row has
        options.setdefault("labels", read_labels(setup))
    folder = Path("data/predictions") / experiment
    before, after = read_predictions(folder / "before.jsonl"), read_predictions(folder / "after.jsonl")
    if set(before) != set(after):
        raise StageError(f"{folder}: before.jsonl and after.jsonl hold different rows; both must be scored "
                         f"on the same rows ({len(set(before) ^ set(after))} differ)")

    import evaluate

    metric = evaluate.load(str(METRICS_DIR / setup["metric"]))
    ids = sorted(before)
    try:
        extra = extra_lines(experiment, setup, options, after, ids, metric)
        scores = {which: score_rows(metric, [rows[i] for i in ids], options)
                  for which, rows in (("before", before), ("after", after))}
    except (TypeError, ValueError) as err:  # an option the metric does not take, or a bad value for one
        raise StageError(f"{setting(experiment, 'score')}: {err}") from None
    scores["gain"] = {name: round(scores["after"][name] - value, 4)
                      for name, value in scores["before"].items() if isinstance(value, float)}
    scores.update(extra)
    write_json(Path("reports/metrics") / f"{experiment}.json", {"rows": len(ids), **scores})
    print(f"[score] {experiment} ({setup['metric']}) on {len(ids)} rows: before {scores['before']}, "
          f"after {scores['after']}" + "".join(f", {name} {scores[name]}" for name in extra))


if __name__ == "__main__":
    run_stage(main)
