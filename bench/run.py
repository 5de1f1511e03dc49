"""Every benchmark in one run: our way against the naive way and the tool users would pick instead.

    make bench                     # or: python bench/run.py [--only cache tokenize training generation merge memory gpu]

Writes reports/bench.json (every figure and its inputs) and reports/bench.md (the same as tables, targets
first). Ratios are measured within this run, on this machine, with the same threads: absolute times on a
shared machine vary too much to quote alone. Needs the default pipeline built (`make repro`: the cache
section times checks over it, the others read models/base) and the bench extra (`pip install -e .[bench]`,
which `make bench` does). Real DialogSum rows come from ../shared/data when present.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT  # noqa: E402

SECTIONS = ("cache", "tokenize", "training", "generation", "merge", "memory", "gpu")


def run_section(name: str) -> dict[str, Any]:
    if name == "cache":
        import cache_cost
        return cache_cost.measure()
    if name == "tokenize":
        import tokenize_speed
        return tokenize_speed.measure()
    if name == "training":
        import training_speed
        return training_speed.measure()
    if name == "generation":
        import generation_speed
        return generation_speed.measure()
    if name == "merge":
        import merge_memory
        return merge_memory.measure(layers=12)
    if name == "gpu":
        import gpu
        return gpu.measure()
    import training_memory
    return training_memory.measure()


def cell(value: Any) -> str:
    if isinstance(value, float):
        if value and abs(value) < 0.001:
            return f"{value:.3g}"
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.0f}"
    if value is None:
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"{k} {cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return " → ".join(cell(v) for v in value)
    return str(value)


def table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(c.replace("_", " ") for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return lines + [""]


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Benchmarks", "", f"Measured {report['date']} on {report['machine']} in {report['seconds']:.0f} s "
             f"with `{report['command']}`. Ratios compare ways measured in this same run; absolute times are "
             "this machine's.", "", "## Targets", "",
             "| section | measure | value | goal | met |", "|---|---|---|---|---|"]
    for section in report["sections"]:
        for t in section.get("targets", []):
            met = "yes" if t["met"] else ("**missed**" if t["met"] is False else "—")
            lines.append(f"| {section['title']} | {t['name']} | {cell(t['value'])} | {t['goal']} | {met} |")
    lines.append("")
    for section in report["sections"]:
        lines += [f"## {section['title']}", ""]
        if section.get("seconds"):
            lines += [f"_{section['seconds']:.0f} s, measured {section.get('measured', report['date'])}._", ""]
        if section.get("skipped"):
            lines += [f"Skipped: {section['skipped']}.", ""]
            continue
        lines += [f"- {k}: {cell(v)}" for k, v in section.get("inputs", {}).items()] + [""]
        lines += table(section.get("rows", []))
        if section.get("scaling"):
            lines += ["Scaling (a fresh process each, startup included):", ""] + table(section["scaling"])
        if section.get("losses"):
            lines += ["Loss per logged step:", ""] + table(
                [{"variant": k, "losses": v} for k, v in section["losses"].items()])
        if section.get("matmul_gflops"):
            lines += [f"Measured matmul rate (2048² square, same threads): {cell(section['matmul_gflops'])} GFLOP/s", ""]
        lines += [f"- {note}" for note in section.get("notes", [])] + [""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    args = parser.parse_args()
    import torch

    started = time.perf_counter()
    sections = []
    for name in args.only:
        print(f"[bench] {name} ...", flush=True)
        began = time.perf_counter()
        section = run_section(name)
        section["key"], section["seconds"] = name, round(time.perf_counter() - began, 1)
        section["measured"] = time.strftime("%Y-%m-%d")
        sections.append(section)
        print(f"[bench] {name}: {section['seconds']} s; " + "; ".join(
            f"{t['name']} = {t['value']} ({'met' if t['met'] else 'MISSED'})" for t in section.get("targets", [])),
            flush=True)
    earlier = args.out / "bench.json"
    if args.only != list(SECTIONS) and earlier.exists():  # a partial run replaces its sections, keeps the rest
        fresh = {section["key"]: section for section in sections}
        kept = json.loads(earlier.read_text())["sections"]
        sections = [fresh.pop(section.get("key"), section) for section in kept] + list(fresh.values())
    report = {"date": time.strftime("%Y-%m-%d"), "command": "python bench/run.py",
              "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                         f"torch {torch.__version__}", "seconds": round(sum(s.get("seconds", 0) for s in sections), 1),  # the sections
              "sections": sections}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (args.out / "bench.md").write_text(markdown(report))
    print(f"[bench] wrote {args.out / 'bench.md'} and bench.json; this run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
