"""train: fine-tune models/base/<model> on data/tokenized/<experiment>/train -> models/trained/<experiment>/.

The experiment's kind and method (LoRA, QLoRA, prompt tuning, full) pick the model through
stages/modeling.py; this stage is the same Trainer loop for all of them. Batches are grouped by length and
padded per batch (on real DialogSum rows that wastes 4.6% of tokens on padding, against 33% for random
batches: bench/padding.py). Every optimizer step's loss goes to reports/train/<experiment>/loss.csv (a DVC
plot); the run's totals go to summary.json and the wall-clock speed to reports/speed/<experiment>.json.
What reloads the model (adapter, prompt embeddings or full weights) is saved as safetensors.
"""
from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path
from typing import Any

from stages.common import (
    StageError,
    atomic_dir,
    atomic_file,
    load_experiment,
    load_params,
    one_item,
    pin_threads,
    read_labels,
    require_keys,
    run_stage,
    write_json,
)
from stages.modeling import MERGEABLE, attach_method, collator_for, load_base, load_tokenizer, save_trained

MODEL_INPUTS = ("input_ids", "labels", "token_type_ids")  # the columns a model takes; ids and maps stay behind


def write_loss_log(path: Path, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [{"step": h["step"], "epoch": round(h["epoch"], 4), "loss": round(h["loss"], 6),
             "learning_rate": h["learning_rate"]} for h in history if "loss" in h]
    with atomic_file(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "epoch", "loss", "learning_rate"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def check_method_params(params: dict[str, Any], method: str, where: str) -> None:
    if method in MERGEABLE:
        require_keys(params.get("lora"), f"{where}.lora", "r", "alpha", "dropout", "target_modules")
    if method == "prompt_tuning":
        require_keys(params.get("prompt_tuning"), f"{where}.prompt_tuning", "virtual_tokens")


def training_arguments(params: dict[str, Any], seed: int, method: str, scratch: Path):
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(scratch), use_cpu=not cuda, seed=seed,
        per_device_train_batch_size=int(params["batch_size"]),
        gradient_accumulation_steps=int(params.get("grad_accum", 1)),
        num_train_epochs=float(params["epochs"]), max_steps=int(params.get("max_steps") or -1),
        learning_rate=float(params["learning_rate"]), lr_scheduler_type=params.get("scheduler", "linear"),
        warmup_steps=int(params.get("warmup_steps", 0)), weight_decay=float(params.get("weight_decay", 0.0)),
        # QLoRA as its paper: activations recomputed in the backward pass, and the optimizer's state paged
        # in 8 bits where CUDA is there to page it; bitsandbytes has no paged optimizer on a CPU
        activation_checkpointing=method == "qlora", activation_checkpointing_kwargs={"use_reentrant": False},
        optim=params.get("optim") or ("paged_adamw_8bit" if method == "qlora" and cuda else "adamw_torch"),
        train_sampling_strategy=params.get("sampling", "group_by_length"), logging_steps=1, save_strategy="no",
        report_to="none", include_num_input_tokens_seen="non_padding", dataloader_num_workers=0,
        disable_tqdm=False)


def main(argv: list[str]):
    """Train, save, log; returns the trained model for a caller in the same process (tests compare it
    with the model reloaded from disk)."""
    experiment = one_item(argv, "train")
    setup = load_experiment(experiment)
    kind, method = setup["kind"], setup["method"]
    params = load_params("train", experiment, required=("epochs", "batch_size", "learning_rate", "threads"))
    where = f"params.yaml train.{experiment}"
    check_method_params(params, method, where)

    from datasets import load_from_disk
    from transformers import Trainer, set_seed

    pin_threads(params["threads"])
    set_seed(setup["seed"])  # before a head or adapter is initialised
    base = Path("models/base") / setup["model"]
    head = not setup["generates"]
    labels = read_labels(setup) if head else None
    qlora = setup["qlora"]
    # only the train split: dvc.yaml makes train depend on it alone, so a test-only change never retrains
    train_rows = load_from_disk(str(Path("data/tokenized") / experiment / "train"))
    train_rows = train_rows.remove_columns([c for c in train_rows.column_names if c not in MODEL_INPUTS])
    if params.get("max_train_rows"):
        train_rows = train_rows.select(range(min(int(params["max_train_rows"]), train_rows.num_rows)))
    tokenizer = load_tokenizer(base)
    model = attach_method(load_base(kind, base, labels=labels, qlora=qlora), kind, method, params, base)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"[train] {experiment}: {kind} + {method}, {trainable:,} of {total:,} parameters trainable")
    collator = collator_for(kind, tokenizer, model)

    reports = Path("reports/train") / experiment
    with atomic_dir(Path("models/trained") / experiment) as out:
        args = training_arguments(params, setup["seed"], method, out / "trainer")
        trainer = Trainer(model=model, args=args, train_dataset=train_rows, data_collator=collator)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        shutil.rmtree(out / "trainer", ignore_errors=True)  # run scratch
        save_trained(model, out, kind, method, labels, qlora)

    losses = write_loss_log(reports / "loss.csv", trainer.state.log_history)
    if not losses:
        raise StageError(f"{where}: training logged no loss (0 steps? check epochs / max_steps)")
    # the collator also sees a batch the Trainer prefetches but never trains on, so the padding share
    # comes from it and the trained token count from the Trainer itself
    real = int(trainer.state.num_input_tokens_seen)
    built = collator.real_tokens + collator.padded_tokens
    summary = {"steps": trainer.state.global_step, "rows": train_rows.num_rows, "trainable_params": trainable,
               "first_loss": losses[0]["loss"], "final_loss": losses[-1]["loss"],
               "real_tokens": real, "pad_fraction": round(collator.padded_tokens / max(built, 1), 4)}
    write_json(reports / "summary.json", summary)  # deterministic: same params, same bytes
    speed = {"seconds": round(seconds, 1), "tokens_per_second": round(real / seconds, 1)}
    write_json(Path("reports/speed") / f"{experiment}.json", speed)  # wall-clock: differs run to run, kept apart
    print(f"[train] {experiment}: {summary['steps']} steps, loss {summary['first_loss']:.3f} -> "
          f"{summary['final_loss']:.3f}, {real} tokens at {speed['tokens_per_second']}/s, "
          f"padding {summary['pad_fraction']:.1%}")
    return model


if __name__ == "__main__":
    run_stage(main)
