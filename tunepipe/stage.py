"""How a stage runs: `python -m stages.<name> <item> [--profile FOLDER]`, its errors as one line and an exit status.

No stage imports Prefect or DVC: a stage is a plain command that DVC runs.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

from tunepipe.errors import TRANSIENT_EXIT, StageError, TransientError
from tunepipe.files import write_json

PROFILE = ""  # the profile folder a stage works in ("" for the repository root), set by run_stage


def run_stage(main: Callable[[list[str]], None], timed: bool = True) -> None:
    """Entry point wrapper: a StageError becomes one clear line on stderr and exit status 2 (TRANSIENT_EXIT for
    a TransientError). `--profile FOLDER` runs the stage inside a profile's folder (its params.yaml,
    experiments/ and outputs), though DVC starts it from the repository root so that it imports this code.
    A stage that succeeds leaves its wall time in reports/speed/stages/ (out of git and DVC: it differs on
    every run), which the cache benchmark sums into the cost of a cold run."""
    global PROFILE
    started = time.perf_counter()
    argv = sys.argv[1:]
    if "--profile" in argv:
        at = argv.index("--profile")
        if at + 1 >= len(argv) or not Path(argv[at + 1]).is_dir():
            print(f"error: --profile needs a profile folder, got {argv[at + 1:at + 2] or 'nothing'}", file=sys.stderr)
            sys.exit(2)
        PROFILE = argv[at + 1].rstrip("/")
        os.chdir(PROFILE)
        argv = argv[:at] + argv[at + 2:]
    try:
        main(argv)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(TRANSIENT_EXIT if isinstance(err, TransientError) else 2)
    if not timed:
        return
    name = "@".join([Path(sys.argv[0]).stem, *(["+".join(argv)] if argv else [])])  # predict@x+after
    write_json(Path("reports/speed/stages") / f"{name}.json",
               {"seconds": round(time.perf_counter() - started, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})


def one_item(argv: list[str], stage: str) -> str:
    if len(argv) != 1:
        raise StageError(f"usage: python -m stages.{stage} <item>  (an entry of params.yaml '{stage}')")
    return argv[0]
