"""config: experiments/<name>.yaml + its defaults -> data/config/<name>/<stage>.json, one file per stage.

The first stage of every experiment. It checks the whole experiment at once (tunepipe/settings/resolve.py:
an unknown key, a wrong type or a pair that does not fit fails here, in a second, naming file, line and key)
and writes each stage the part of the experiment it reads, defaults filled in (tunepipe.settings reads them
back). Each later stage depends on its own file only, so DVC re-runs exactly the stages whose settings
changed: a new learning rate re-trains, a new `max_new_tokens` only re-predicts, and a label such as `task:`
re-runs nothing but the report. The files are written sorted, so the same settings give the same bytes.
"""
from __future__ import annotations

from tunepipe.files import atomic_dir, write_json
from tunepipe.layout import CONFIG
from tunepipe.settings.resolve import resolve, stage_settings
from tunepipe.stage import one_item, run_stage


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
