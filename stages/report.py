"""report: reports/README.md (in the profile's folder) with every experiment's before and after, by task.

Reads only what tokenize, train, predict and score wrote (tunepipe/reporting.py), so it re-runs in seconds
and never touches a model. Writes plots/ (loss curves, a before/after chart) and scores.csv (the chart's
numbers, a DVC plot). Says which profile ran: the embedded default shows the mechanics in minutes, not a
quality gain.
"""
from __future__ import annotations

from pathlib import Path

from tunepipe.files import atomic_file
from tunepipe.reporting import page, read_json, write_chart
from tunepipe.settings import experiment_names, load_experiment, load_params, require_keys
from tunepipe.stage import run_stage


def main(argv: list[str]) -> None:
    params = load_params("report")
    require_keys(params, "params.yaml report", "profile", "note")
    out = Path("reports")
    setups = {name: load_experiment(name, "report") for name in experiment_names()}
    metrics = {name: read_json(Path("reports/metrics") / f"{name}.json") for name in setups}
    figure = write_chart(setups, metrics, out)
    with atomic_file(out / "README.md") as handle:
        handle.write(page(params, setups, metrics, figure, out))
    print(f"[report] {out / 'README.md'}")


if __name__ == "__main__":
    run_stage(main)
