"""Time the convert step on every real dataset in ../shared/data, against a bare read of the same bytes.

    python bench/convert_speed.py

Prints, per dataset: rows, the ledger, seconds, and how many times a bare read of the same files
(bytes read and split into lines, nothing parsed) the full conversion costs. The goal is under 30 s
for the largest input on 2 cores. Skips datasets whose files are absent.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tunepipe.ledger import Ledger  # noqa: E402
from tunepipe.conversion import convert  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SPLIT = {"train": 0.8, "validation": 0.1, "test": 0.1}
RUNS = {  # name: (format, files or folder under shared/data, options, split ratios)
    "dialogsum train+dev": ("dialogsum", ["dialogsum"], {}, SPLIT),
    "jnlpba standoff train": ("jnlpba", ["jnlpba/standoff/train"], {}, SPLIT),
    "phrasebank 50Agree, test from 66Agree": ("phrasebank", ["financial_phrasebank"],
                                              {"test_level": "66Agree", "test_fraction": 0.2},
                                              {"train": 0.9, "validation": 0.1}),
    "mrpc original + glue": ("mrpc", ["mrpc"], {}, SPLIT),
}


def bare_read(folder: Path) -> float:
    started = time.perf_counter()
    for path in folder.rglob("*"):
        if path.is_file():
            path.read_bytes().splitlines()
    return time.perf_counter() - started


def main() -> None:
    for name, (fmt, sources, options, split) in RUNS.items():
        if not all((SHARED / s).exists() for s in sources):
            print(f"{name}: skipped (no {SHARED})")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw"
            for source in sources:
                shutil.copytree(SHARED / source, raw, dirs_exist_ok=True)
            size = sum(p.stat().st_size for p in raw.rglob("*") if p.is_file()) / 1e6
            floor = bare_read(raw)
            ledger = Ledger(name)
            started = time.perf_counter()
            convert(raw, {"format": fmt, "options": options, "split": split}, ledger)
            seconds = time.perf_counter() - started
            summary = ledger.summary()
        print(f"{name}: {size:.1f} MB, read {summary['read']}, written {summary['written_by_split']}, "
              f"rejected {summary['rejected_by_reason'] or 0}, {seconds:.2f} s "
              f"({seconds / max(floor, 1e-6):.0f}x a bare read of the bytes)")


if __name__ == "__main__":
    main()
