"""Training checkpoints that survive a killed run and refuse to mix runs.

They live in checkpoints/<experiment>/, outside every DVC output (a half-trained model must never look like
a result), and the train stage removes them once it has saved its output. A re-run of a killed stage
resumes from the newest complete checkpoint (the Trainer restores weights, optimizer, scheduler, RNG states
and its place in the data), so it ends with the same weights as an uninterrupted run.

fingerprint.json records what the checkpoints were made from: the experiment and train params, the
train and validation splits' bytes, the base model (its config and, for each weight file, its size and
first MiB) and the training code (every file the train stage imports, found as the plan finds a stage's
code dependencies, and the versions of torch, transformers and peft). Which train settings count is declared
with each setting (tunepipe/settings/train.py: every one whose effect is not "none").
Resuming with anything else is refused with one line naming what changed.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from tunepipe.errors import StageError
from tunepipe.files import write_json
from tunepipe.imports import code_deps
from tunepipe.layout import CODE_ROOT
from tunepipe.settings.train import fingerprinted

ROOT = Path("checkpoints")
TRAIN_STAGE = "stages.train"  # the entry point whose code, imports included, the checkpoints are made by
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes")


def _digest_files(folder: Path, head_only: bool = False) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as handle:  # weights: the first MiB and the size tell one model from another
            digest.update(handle.read(1 << 20) if head_only and path.suffix == ".safetensors" else handle.read())
    return digest.hexdigest()


def _digest_text(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def data_digest(tokenized: Path) -> str:
    """The train and validation splits' bytes (the test split never reaches training)."""
    digest = hashlib.sha256()
    for split in ("train", "validation"):
        digest.update(_digest_files(tokenized / split).encode())
    return digest.hexdigest()


def fingerprint(setup: dict[str, Any], params: dict[str, Any], data: str, base: Path,
                run: dict[str, str] | None = None) -> dict[str, str]:
    """`data`: data_digest() of the experiment's tokenized splits; `run`: the resolved precision and device
    (`auto` on a GPU and on a CPU are other computations: their checkpoints do not mix)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "absent"

    recipe = {"experiment": setup, "train": fingerprinted(params)}
    code = {path: (CODE_ROOT / path).read_text(encoding="utf-8") for path in code_deps(TRAIN_STAGE)}
    return {"params": _digest_text(recipe), **(run or {}),  # precision and device, as they read
            "data": data,
            "base model": _digest_files(base, head_only=True),
            "code": _digest_text({"files": code, "libraries": {name: installed(name) for name in LIBRARIES}})}


def resume_from(folder: Path, made_from: dict[str, str], where: str) -> str | None:
    """The newest complete checkpoint to resume from, or None for a fresh start (recording made_from).

    Checkpoints made from anything else are refused, not overwritten: the user decides to drop them. A
    folder with no complete checkpoint holds nothing to protect and starts over.
    """
    record = folder / "fingerprint.json"
    complete = [p for p in folder.glob("checkpoint-*") if _complete(p)] if record.exists() else []
    if not complete:
        shutil.rmtree(folder, ignore_errors=True)  # partial saves, or leftovers without a record
        folder.mkdir(parents=True)
        write_json(record, made_from)
        return None
    found = json.loads(record.read_text(encoding="utf-8"))
    changed = [part for part in made_from if found.get(part) != made_from[part]]
    if changed:
        raise StageError(f"{where}: {folder} holds checkpoints made from other {' and '.join(changed)}; "
                         f"delete {folder} to start over")
    newest = max(complete, key=lambda p: int(p.name.rsplit("-", 1)[1]))
    print(f"[train] resuming from {newest}")
    return str(newest)


def _complete(checkpoint: Path) -> bool:
    """The Trainer writes trainer_state.json last: a checkpoint killed while saving has none (or a torn one)."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def remove(folder: Path) -> None:
    """The record goes first: a run killed halfway through the removal finds no record, so it starts over
    instead of resuming from a checkpoint that lost its weights."""
    (folder / "fingerprint.json").unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def skip_final_checkpoint():
    """A Trainer callback: the Trainer saves a checkpoint at the last step, which the stage would write
    (a full model and its optimizer state) only to delete it after saving the result itself."""
    from transformers import TrainerCallback

    class SkipFinalCheckpoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = False

    return SkipFinalCheckpoint()
