"""score: before and after predictions through the experiment's metric -> reports/metrics/<experiment>.json.

Metrics are `evaluate` modules shipped in metrics/<name>/ and loaded by path (hub metric scripts cannot be
fetched offline); users can load the same modules in a notebook with `evaluate.load("metrics/<name>")`.
Each module's docstring defines its numbers. The experiment's `score:` holds the metric's options
(verbaliser synonyms, refusal phrases, stemming), passed to `compute` as they are. Both predictions must
cover the same rows, which this stage checks; `gain` is after minus before for every score.
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
        scores = {which: score_rows(metric, [rows[i] for i in ids], options)
                  for which, rows in (("before", before), ("after", after))}
    except (TypeError, ValueError) as err:  # an option the metric does not take, or a bad value for one
        raise StageError(f"{setting(experiment, 'score')}: {err}") from None
    scores["gain"] = {name: round(scores["after"][name] - value, 4)
                      for name, value in scores["before"].items() if isinstance(value, float)}
    write_json(Path("reports/metrics") / f"{experiment}.json", {"rows": len(ids), **scores})
    print(f"[score] {experiment} ({setup['metric']}) on {len(ids)} rows: before {scores['before']}, "
          f"after {scores['after']}")


if __name__ == "__main__":
    run_stage(main)
