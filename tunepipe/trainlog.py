"""Training curves through DVCLive: reports/train/<experiment>/live/ (metrics.json + plots/metrics/*.tsv).

During training the callback logs each optimizer step's training loss and each evaluation's
validation loss (and a head's validation accuracy), so `dvc plots show` draws the curves of a run still
going. When training ends the folder is written once more from the Trainer's own history, which a resumed
run restores from its checkpoint:
the files then hold every step exactly once, with no wall-clock values, so the same run gives the same
bytes. dvc.yaml declares metrics.json as a metric (`dvc exp show` lists the final train and validation
loss) and the plots folder as plots.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback

# the Trainer's log keys -> DVCLive metric names (one plot file each)
LOGGED = {"loss": "train/loss", "eval_loss": "eval/loss", "eval_accuracy": "eval/accuracy",  # accuracy: heads
          # a preference objective's implicit rewards (TRL's names): the chosen and rejected answers', their
          # margin, and how often the chosen one's is the higher
          **{f"{split}rewards/{name}": f"{'eval' if split else 'train'}/rewards/{name}"
             for split in ("", "eval_") for name in ("chosen", "rejected", "margins", "accuracies")},
          "kl": "train/kl", "eval_kl": "eval/kl",  # the policy's KL from the reference (KTO's estimate, GRPO's)
          "reward": "train/reward", "eval_reward": "eval/reward"}  # GRPO's mean reward over its completions


def logged(entry: dict[str, Any]) -> dict[str, str]:
    """The entry's keys DVCLive records, and their names: LOGGED's, and GRPO's mean of each reward function
    (rewards/<name>/mean, which TRL names after the function)."""
    names = {key: name for key, name in LOGGED.items() if key in entry}
    for key in entry:
        if key.startswith(("rewards/", "eval_rewards/")) and key.endswith("/mean"):
            names[key] = f"{'eval' if key.startswith('eval_') else 'train'}/{key.removeprefix('eval_')[:-len('/mean')]}"
    return names


def _live(folder: Path, resume: bool):
    from dvclive import Live

    # no DVC experiment of its own (the stage runs under `dvc repro` / `dvc exp run`), no dvc.yaml edits,
    # no system monitoring: only the metrics files
    return Live(str(folder), resume=resume, save_dvc_exp=False, dvcyaml=None, monitor_system=False)


def _log(live, entry: dict[str, Any]) -> None:
    live.step = int(entry["step"])
    for key, name in logged(entry).items():
        live.log_metric(name, round(float(entry[key]), 6))
    live.make_summary()


class LiveCurves(TrainerCallback):
    def __init__(self, folder: Path):
        self.folder = folder
        self.live = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.live = _live(self.folder, resume=False)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.live is not None and logs:
            _log(self.live, {"step": state.global_step, **logs})


def write_curves(folder: Path, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rewrite the folder from the Trainer's history; returns the training-loss entries."""
    live = _live(folder, resume=False)  # a fresh Live clears what the run wrote as it went
    for entry in history:
        if logged(entry):
            _log(live, entry)
    live.end()
    return [entry for entry in history if "loss" in entry]
