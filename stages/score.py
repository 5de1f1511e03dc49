"""score: before and after predictions through the experiment's metric -> reports/metrics/<experiment>.json.

The experiment's `score:` holds the metric's options (verbaliser synonyms, refusal phrases, stemming), passed
to the metric module's `compute` as they are (tunepipe/scoring.py). Both predictions must cover the same
rows, which this stage checks; `gain` is after minus before for every score. Where the experiment asks, a
rule's and a cascade's lines join the table, on the same rows and by the same metric.
"""
from __future__ import annotations

from pathlib import Path

from tunepipe.errors import StageError
from tunepipe.files import write_json
from tunepipe.scoring import read_predictions, score_both
from tunepipe.settings import load_experiment, read_labels
from tunepipe.stage import one_item, run_stage


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
    scores = score_both(experiment, setup, options, before, after)
    write_json(Path("reports/metrics") / f"{experiment}.json", scores)
    extra = [name for name in ("rule", "cascade") if name in scores]
    print(f"[score] {experiment} ({setup['metric']}) on {scores['rows']} rows: before {scores['before']}, "
          f"after {scores['after']}" + "".join(f", {name} {scores[name]}" for name in extra))


if __name__ == "__main__":
    run_stage(main)
