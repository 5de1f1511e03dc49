"""Where things are: the repository's own folders (defaults, metrics) and a profile's files and folders."""
from __future__ import annotations

from pathlib import Path

CODE_ROOT = Path(__file__).resolve().parents[1]  # the repository: tunepipe/, stages/, metrics/, defaults/
DEFAULTS = CODE_ROOT / "defaults"
METRICS_DIR = CODE_ROOT / "metrics"  # the evaluate modules, loaded by path
# relative to the profile's folder (the repository root for the default profile), where a stage runs
PARAMS = Path("params.yaml")
EXPERIMENTS = Path("experiments")
CONFIG = Path("data/config")
