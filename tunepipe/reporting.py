"""The results page: every experiment's before and after, by task, with plots and a table of goals.

Reads only what tokenize, train, predict and score wrote, so it re-runs in seconds and never touches a
model. Experiments of one task sit in one table (a head beside instruction tuning and prompt tuning on the
same test rows, which this checks), with the seeds' published figures beside them, labelled as other
models and data. An experiment's `targets:` (the real profile's) add a table of goals, each met or missed.
"""
from __future__ import annotations

import csv
import json
import operator
from pathlib import Path
from typing import Any

from tunepipe.errors import StageError
from tunepipe.files import atomic_file, read_jsonl
from tunepipe.layout import METRICS_DIR
from tunepipe.settings import where as setting

HEADLINE = {"rouge_any": "rougeL", "ner_seqeval": "f1", "label_match": "accuracy", "refusal": "refusal_recall",
            "perplexity": "perplexity"}  # perplexity: lower is better
SCALE = {"ner_seqeval": "fraction"}  # seqeval reports 0-1 (as the NER literature does); the others ×100
EXAMPLES = 3
EXTRA = {"rule": "rule (no training)", "cascade": "cascade (gate + after)"}  # more lines on the same rows


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def save_figure(figure, path: Path) -> Path:
    with atomic_file(path, "wb") as handle:
        figure.savefig(handle, format="png", metadata={"Software": None})  # no version string: stable bytes
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def read_curve(path: Path) -> tuple[list[int], list[float]]:
    """A DVCLive plot file (tab-separated step and value); empty when the run logged none."""
    if not path.exists():
        return [], []
    with open(path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [int(r["step"]) for r in rows], [float(r["loss"]) for r in rows]


def plot_loss(experiment: str, live: Path, out: Path) -> Path:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.2), dpi=100)
    for split, style in (("train", "o"), ("eval", "s")):
        steps, losses = read_curve(live / "plots/metrics" / split / "loss.tsv")
        if steps:
            axes.plot(steps, losses, marker=style, markersize=3, label="validation" if split == "eval" else split)
    axes.legend(fontsize=8)
    axes.set(xlabel="optimizer step", ylabel="loss", title=f"{experiment}: training and validation loss")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path = save_figure(figure, out / "plots" / f"{experiment}-loss.png")
    plt.close(figure)
    return path


def plot_before_after(rows: list[dict[str, Any]], out: Path) -> Path:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2), dpi=100)
    labels = [f"{r['experiment']} ({r['metric']})" for r in rows]
    positions = range(len(rows))
    axes.barh([p + 0.2 for p in positions], [r["before_100"] for r in rows], height=0.4, label="before")
    axes.barh([p - 0.2 for p in positions], [r["after_100"] for r in rows], height=0.4, label="after")
    axes.set_yticks(list(positions), labels, fontsize=8)
    axes.invert_yaxis()
    axes.set(xlabel="score ×100 (seqeval F1 ×100)", title="Each experiment's headline score, before and after")
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    path = save_figure(figure, out / "plots" / "before-after.png")
    plt.close(figure)
    return path


def fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def shown(value: Any, limit: int = 240) -> str:
    """A prediction or reference as one table cell (several references or tags joined by " · ")."""
    if isinstance(value, list):
        text = " · ".join(map(str, value)) if value else "(none: the evidence does not answer)"
    else:
        text = str(value)
    text = text.replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= limit else text[:limit] + "…"


def rewards_line(summary: dict[str, Any]) -> str:
    """A preference objective's validation rewards, first evaluation to last (empty for supervised training)."""
    parts = [f"reward {name} {summary[f'first_eval_reward_{key}']:.3f} → {summary[f'final_eval_reward_{key}']:.3f}"
             for key, name in (("accuracies", "accuracy"), ("margins", "margin")) if f"final_eval_reward_{key}" in summary]
    if "final_eval_reward" in summary:  # GRPO's mean reward
        parts.append(f"mean reward {summary['first_eval_reward']:.3f} → {summary['final_eval_reward']:.3f}")
    return "".join(f", validation {part}" for part in parts)


def experiment_section(name: str, setup: dict[str, Any], metrics: dict[str, Any], out: Path) -> list[str]:
    summary = read_json(Path("reports/train") / name / "summary.json")
    counts = read_json(Path("reports/tokenize") / f"{name}.json")
    dropped = counts["train"]["dropped"]
    cut = counts["test"].get("truncated", 0)
    lines = [f"### {name}", "",
             f"`{setup['model']}` as {setup['kind']}, trained by {setup['method']}, scored by "
             f"`metrics/{setup['metric']}` on {metrics['rows']} of the test split's {counts['test']['rows']} rows "
             f"before and after." + (f" {cut} test prompts were cut to the model's context." if cut else "")
             + (f" {dropped} training rows longer than tokenize.max_length were left out." if dropped else ""), "",
             "| score | before | after | gain |" + "".join(f" {EXTRA[b]} |" for b in EXTRA if b in metrics),
             "|---|---:|---:|---:|" + "---:|" * sum(b in metrics for b in EXTRA)]
    for key, before in metrics["before"].items():
        gain = metrics["gain"].get(key)
        lines.append(f"| {key} | {fmt(before)} | {fmt(metrics['after'][key])} | "
                     f"{'' if gain is None else f'{gain:+.4g}'} |"
                     + "".join(f" {fmt(metrics[b].get(key, '—'))} |" for b in EXTRA if b in metrics))
    if any(b in metrics for b in EXTRA):
        lines += ["", "The rule needs no training: it refuses where under a set share of the question's characters "
                  "occur in the evidence (`score.rule`), and gives no answers, so it has no answer match. The "
                  "cascade answers with the refusal where the gate experiment (`score.gate`) predicts refuse, and "
                  "with this model elsewhere (its answer past its own refusal where `predict.answer_anyway` is set)."]
    plot = plot_loss(name, Path("reports/train") / name / "live", out)
    lines += ["", f"Training: {summary['steps']} steps over {summary['rows']} rows, {summary['real_tokens']} "
              f"tokens, {summary['trainable_params']:,} trainable parameters, loss {summary['first_loss']:.3f} → "
              f"{summary['final_loss']:.3f}" + (f", validation loss {summary['final_eval_loss']:.3f}"
              if summary.get("final_eval_loss") is not None else "") + rewards_line(summary)
              + (f", {summary['pad_fraction']:.1%} of batch tokens were padding" if summary.get("pad_fraction")
                 is not None else "") + ".", "",
              f"![{name} training loss]({plot.relative_to(out).as_posix()})", "",
              "| id | input | reference | before | after |", "|---|---|---|---|---|"]
    folder = Path("data/predictions") / name
    before = {row["id"]: row for row in read_jsonl(folder / "before.jsonl")}
    for row in read_jsonl(folder / "after.jsonl")[:EXAMPLES]:
        lines.append(f"| {row['id']} | {shown(row['input'], 160)} | {shown(row['reference'])} | "
                     f"{shown(before[row['id']]['prediction'])} | {shown(row['prediction'])} |")
    return lines + [""]


def task_table(names: list[str], setups: dict, metrics: dict, seeds: dict, task: str) -> list[str]:
    # labels parsed from generated text: how many outputs named no label (they count as wrong)
    parsed = any(setups[name]["metric"] == "label_match" for name in names)
    lines = ["| experiment | model | kind | method | score | before | after | gain | rows |"
             + (" unparseable before → after |" if parsed else ""),
             "|---|---|---|---|---|---:|---:|---:|---:|" + ("---:|" if parsed else "")]
    for name in names:
        setup, result = setups[name], metrics[name]
        key = HEADLINE[setup["metric"]]
        unparseable = (f" {result['before']['unparseable']} → {result['after']['unparseable']} |"
                       if "unparseable" in result["before"] else " |") if parsed else ""
        lines.append(f"| [{name}](#{name}) | {setup['model']} | {setup['kind']} | {setup['method']} | {key} | "
                     f"{fmt(result['before'][key])} | {fmt(result['after'][key])} | "
                     f"{result['gain'][key]:+.4g} | {result['rows']} |{unparseable}")
    rows_by_dataset: dict[str, set] = {}
    for name in names:
        ids = frozenset(row["id"] for row in read_jsonl(Path("data/predictions") / name / "after.jsonl"))
        rows_by_dataset.setdefault(setups[name]["dataset"], set()).add(ids)
    same = all(len(sets) == 1 for sets in rows_by_dataset.values())
    if len(names) > 1:
        lines += ["", "Side by side on the same test rows." if same else
                  "Note: these experiments were scored on different test rows (predict.max_rows differs)."]
    if task in seeds:
        lines += ["", f"The seed's figure (another model and other data, for orientation only): {seeds[task]}."]
    return lines + [""]


COMPARE = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def target_table(targets: dict[str, dict[str, str]], metrics: dict[str, Any]) -> list[str]:
    """Each experiment's `targets`: {score: ">= 82" | "<= 10" | "> before"}: each goal met or missed, in the
    report itself (the config stage has checked how each goal is written)."""
    lines = ["## Targets", "", "| experiment | score | target | before | result | met? |",
             "|---|---|---|---:|---:|---|"]
    for name, goals in targets.items():
        for key, goal in ((key, goal) for key, each in goals.items() for goal in (each if isinstance(each, list) else [each])):
            op, _, bound = str(goal).partition(" ")
            line, _, score = key.rpartition(".")  # "cascade.refusal_recall": a goal for the cascade's line
            line = line or "after"
            if score not in metrics[name].get(line, {}):
                raise StageError(f"{setting(name, 'targets')}.{key}: {name} has no score {key!r} "
                                 f"(it has {', '.join(metrics[name]['after'])})")
            before, after = metrics[name]["before"][score], metrics[name][line][score]
            if bound == "rule" and score not in metrics[name].get("rule", {}):
                raise StageError(f"{setting(name, 'targets')}.{key}: '{goal}' needs the rule's line (score.rule)")
            limit = {"before": before, "rule": metrics[name].get("rule", {}).get(score)}.get(bound)
            met = COMPARE[op](after, float(bound) if limit is None else limit)
            shown = f"{goal} ({fmt(limit)})" if bound == "rule" else goal  # the rule's own figure beside it
            lines.append(f"| [{name}](#{name}) | {key} | {shown} | {fmt(before)} | {fmt(after)} | "
                         f"{'yes' if met else '**missed**'} |")
    return lines + [""]


def metric_definitions(names: list[str]) -> list[str]:
    """Each metric module's own docstring, so the report and the code cannot disagree on a definition."""
    import ast

    lines = ["## How the scores are defined", ""]
    for name in names:
        source = (METRICS_DIR / name / f"{name}.py").read_text(encoding="utf-8")
        lines += [f"### metrics/{name}", "", ast.get_docstring(ast.parse(source)) or "", ""]
    return lines


def write_chart(setups: dict[str, dict], metrics: dict[str, dict], out: Path) -> Path:
    """scores.csv (each experiment's headline score before and after, a DVC plot) and its chart."""
    chart = [{"experiment": name, "metric": HEADLINE[setup["metric"]],
              "before": metrics[name]["before"][HEADLINE[setup["metric"]]],
              "after": metrics[name]["after"][HEADLINE[setup["metric"]]]} for name, setup in setups.items()]
    for row, setup in zip(chart, setups.values()):
        factor = 100 if SCALE.get(setup["metric"]) == "fraction" else 1
        row.update(before_100=row["before"] * factor, after_100=row["after"] * factor)
    with atomic_file(out / "scores.csv") as handle:
        writer = csv.DictWriter(handle, fieldnames=["experiment", "metric", "before", "after"],
                                extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(chart)
    return plot_before_after(chart, out)


def page(params: dict[str, Any], setups: dict[str, dict], metrics: dict[str, dict], figure: Path,
         out: Path) -> str:
    """README.md: the profile, the goals, a table per task, every experiment's section, the metrics' definitions."""
    tasks: dict[str, list[str]] = {}
    for name, setup in setups.items():
        tasks.setdefault(setup.get("task") or setup["dataset"], []).append(name)
    lines = ["# Results", "", f"Profile: **{params['profile']}**. {params['note'].strip()}", "",
             "Each experiment is scored before training (zero-shot for a language model, a new untrained head "
             "for a classifier) and after, on the same test rows. ROUGE, accuracy, F1 and refusal rates are "
             "×100; seqeval scores are fractions" + ("; perplexity is lower when better" if any(
                 setup["metric"] == "perplexity" for setup in setups.values()) else "") + ". Every metric is "
             "defined in the docstring of its module in `metrics/`.", "", f"![before and after]({figure.relative_to(out).as_posix()})", ""]
    targets = {name: setup["targets"] for name, setup in setups.items() if setup.get("targets")}
    if targets:
        lines += target_table(targets, metrics)
    for task, names in tasks.items():
        lines += [f"## {task}", ""] + task_table(names, setups, metrics, params.get("seeds") or {}, task)
    lines += ["## Every experiment", ""]
    for names in tasks.values():
        for name in names:
            lines += experiment_section(name, setups[name], metrics[name], out)
    lines += metric_definitions(sorted({setup["metric"] for setup in setups.values()}))
    lines += ["Rebuild with `dvc repro`; compare runs with `dvc exp show --only-changed`. The last run's wall-clock "
              "timings on its machine are in `reports/speed/<experiment>.json` (kept out of git and DVC).", ""]
    return "\n".join(lines)
