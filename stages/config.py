"""config: experiments/<name>.yaml + its defaults -> data/config/<name>/<stage>.json, one file per stage.

The first stage of every experiment. It checks the whole experiment at once (stages/schema.py: an unknown key,
a wrong type or a pair that does not fit fails here, in a second, naming file, line and key) and writes
each stage the part of the experiment it reads, defaults filled in (stages/settings.py reads them back).
Each later stage depends on its own file only, so DVC re-runs exactly the stages whose settings changed: a
new learning rate re-trains, a new `max_new_tokens` only re-predicts, and a label such as `task:` re-runs
nothing but the report. The files are written sorted, so the same settings give the same bytes.
"""
from __future__ import annotations

from typing import Any

from stages.common import atomic_dir, one_item, run_stage, write_json
from stages.schema import resolve
from stages.settings import CONFIG

# what the experiment is; its name is not in the files (the stage knows it), so two experiments with the same
# settings have the same settings files, and the same cache entries
IDENTITY = ("dataset", "model", "kind", "kind_rows", "generates")
STAGE_KEYS = {  # what each stage reads: a change anywhere else leaves it up to date
    "tokenize": (*IDENTITY, "tokenize"),
    "train": (*IDENTITY, "method", "seed", "qlora", "train"),
    "predict": (*IDENTITY, "method", "metric", "seed", "qlora", "predict"),
    "score": (*IDENTITY, "metric", "score"),
    "merge": (*IDENTITY, "method", "qlora", "merge", "train"),
    "report": (*IDENTITY, "task", "description", "method", "metric", "targets"),
}


def stage_settings(setup: dict[str, Any]) -> dict[str, dict[str, Any]]:
    files = {stage: {key: setup.get(key) for key in keys} for stage, keys in STAGE_KEYS.items()}
    if "merge" not in setup:
        del files["merge"]
    return files


def main(argv: list[str]) -> None:
    name = one_item(argv, "config")
    setup = resolve(name)
    with atomic_dir(CONFIG / name) as out:
        for stage, settings in stage_settings(setup).items():
            write_json(out / f"{stage}.json", settings)
    print(f"[config] {name}: {setup['kind']} + {setup['method']} on {setup['dataset']}, model {setup['model']}, "
          f"scored by {setup['metric']}")


if __name__ == "__main__":
    run_stage(main)
