"""train: fine-tune models/base/<model> on data/tokenized/<experiment> -> models/trained/<experiment>/.

The experiment's kind and method (LoRA, QLoRA, prompt tuning, full) pick the model through
stages/modeling.py; this stage is the same Trainer loop for all of them:
- batches grouped by length and padded per batch (on real DialogSum rows 4.6% of tokens are padding,
  against 33% for random batches: bench/padding.py);
- the validation split evaluated every `eval_steps` (default: each epoch), curves logged through DVCLive
  to reports/train/<experiment>/live/ (stages/trainlog.py);
- checkpoints every `checkpoint_steps` in checkpoints/<experiment>/, outside DVC's outputs: a killed run
  resumes where it stopped and ends with the same weights (stages/checkpoints.py);
- a memory estimate before the first step, and a one-line stop when the run cannot fit (stages/memory.py);
- `processes: N` re-launches the stage under `accelerate launch` (DDP; FSDP or DeepSpeed through an
  accelerate config file in `accelerate_config`); bf16 (fp16 where the GPU does not compute in bf16 natively)
  on a GPU, fp32 on a CPU; the precision and device it resolved to are in the checkpoints' fingerprint and in
  recipe.json.
What reloads the model (adapter, prompt embeddings or full weights) is saved as safetensors; totals go to
summary.json and the wall-clock speed to reports/speed/<experiment>.json (neither a DVC output nor in git:
it differs on every run, so tracking it would make every run change tracked files).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from stages import checkpoints
from stages.common import StageError, atomic_dir, one_item, pin_threads, read_labels, run_stage, write_json
from stages.settings import load_experiment, where as setting
from stages.modeling import (
    BF16_ON_CPU,
    attach_method,
    collator_for,
    device,
    device_description,
    load_base,
    load_tokenizer,
    one_process_one_gpu,
    resolved_precision,
    save_trained,
)

MODEL_INPUTS = ("input_ids", "labels", "token_type_ids")  # the columns a model takes; ids and maps stay behind


def launch_processes(experiment: str, params: dict[str, Any], resume: str | None) -> None:
    """With `processes: N > 1`, run this stage again as N processes under accelerate and exit with its status.

    accelerate's `--multi_gpu` launcher is torchrun underneath: on a machine without GPUs the processes train
    on the CPU and talk over gloo (its `--cpu` launcher would need MPI). TUNEPIPE_LAUNCHED marks the
    launched processes, so none of them launches again.
    """
    processes = int(params.get("processes") or 1)
    if processes <= 1 or os.environ.get("TUNEPIPE_LAUNCHED"):
        return
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    if params.get("accelerate_config"):  # FSDP, DeepSpeed, several machines: accelerate's own config file
        command += ["--config_file", str(params["accelerate_config"])]
    else:
        command += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    env = {**os.environ, "TUNEPIPE_LAUNCHED": "1", "TUNEPIPE_RESUME": resume or ""}
    sys.exit(subprocess.call(command + ["-m", "stages.train", experiment], env=env))


def training_arguments(params: dict[str, Any], setup: dict[str, Any], scratch: Path, evaluate: bool, precision: str):
    import torch
    from transformers import TrainingArguments

    cuda, method = torch.cuda.is_available(), setup["method"]
    every = params.get("eval_steps")
    keep_best = bool(params.get("keep_best")) and evaluate
    return TrainingArguments(
        output_dir=str(scratch), use_cpu=not cuda, seed=setup["seed"], bf16=precision == "bf16",
        fp16=precision == "fp16",
        # across processes a language model's loss is averaged over all tokens of the global batch; a head's
        # loss is already a mean per process, which the Trainer would otherwise count once per process
        average_tokens_across_devices=setup["generates"],
        per_device_train_batch_size=int(params["batch_size"]), per_device_eval_batch_size=int(params["batch_size"]),
        gradient_accumulation_steps=int(params.get("grad_accum", 1)),
        num_train_epochs=float(params["epochs"]), max_steps=int(params.get("max_steps") or -1),
        learning_rate=float(params["learning_rate"]), lr_scheduler_type=params.get("scheduler", "linear"),
        warmup_steps=int(params.get("warmup_steps", 0)), weight_decay=float(params.get("weight_decay", 0.0)),
        # QLoRA as its paper: activations recomputed in the backward pass, and the optimizer's state paged
        # in 8 bits where CUDA is there to page it; bitsandbytes has no paged optimizer on a CPU
        activation_checkpointing=method == "qlora", activation_checkpointing_kwargs={"use_reentrant": False},
        optim=params.get("optim") or ("paged_adamw_8bit" if method == "qlora" and cuda else "adamw_torch"),
        train_sampling_strategy=params.get("sampling", "group_by_length"),
        eval_strategy=("steps" if every else "epoch") if evaluate else "no", eval_steps=every,
        # keep_best: end with the weights of the evaluation that scored best on validation (a checkpoint at
        # each evaluation), instead of the last step's: early stopping chosen on validation, never on test
        save_strategy="steps", save_total_limit=2,
        save_steps=every if keep_best else int(params.get("checkpoint_steps") or 50),
        load_best_model_at_end=keep_best, metric_for_best_model=params.get("keep_best") if keep_best else None,
        logging_steps=1, report_to="none", include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0, disable_tqdm=False)


def bf16_weights(run: dict[str, str], kind: str, method: str) -> bool:
    """bf16 on a CPU for a language model's adapter: the base's frozen weights are stored in bf16 (a head's
    new classifier would be a bf16 weight that trains, so heads keep fp32, autocast where asked)."""
    return run["precision"] == "bf16" and run["device"] == "cpu" and method in BF16_ON_CPU.get(kind, ())


def full_precision_evaluation():
    """A Trainer that evaluates with the frozen bf16 weights cast up to fp32 and back (exactly: they are bf16
    values), so a bf16 run's validation loss is what an fp32 run would measure for its adapter, and the
    two runs' curves compare: evaluated in bf16 the loss lags, rounding away much of each small update."""
    import torch
    from transformers import Trainer

    class FullPrecisionEvaluation(Trainer):
        def evaluate(self, *args, **kwargs):
            frozen = [p for p in self.model.parameters() if not p.requires_grad and p.dtype == torch.bfloat16]
            for parameter in frozen:
                parameter.data = parameter.data.float()
            try:
                return super().evaluate(*args, **kwargs)
            finally:
                for parameter in frozen:
                    parameter.data = parameter.data.to(torch.bfloat16)

    return FullPrecisionEvaluation


def head_accuracy(eval_prediction) -> dict[str, float]:
    """Validation accuracy of a head (per word for a token head, over the words' first sub-tokens), so
    settings can be chosen on validation by a score and not only by the loss."""
    predicted, labels = eval_prediction.predictions.argmax(-1), eval_prediction.label_ids
    scored = labels != -100
    return {"accuracy": round(float((predicted[scored] == labels[scored]).mean()), 6)}


def padding_share(trainer, collator) -> float:
    """The share of padding in one epoch of training batches, replayed through the Trainer's own (seeded)
    sampler and collator: counted during the run it would miss what a resumed run skipped, and include the
    evaluation batches."""
    collator.real_tokens = collator.padded_tokens = 0
    for _ in trainer.get_train_dataloader():
        pass
    return round(collator.padded_tokens / max(collator.real_tokens + collator.padded_tokens, 1), 4)


def split_rows(experiment: str, split: str, limit: int | None = None, seed: int = 0):
    """A tokenized split's model inputs; None for an empty split (datasets saves no data file for it).
    With `limit`, a seeded random subset: rows are stored sorted by id, and the first ids of a release are
    seldom a fair sample of it."""
    from datasets import load_from_disk

    folder = Path("data/tokenized") / experiment / split
    if not list(folder.glob("*.arrow")):
        return None
    rows = load_from_disk(str(folder))
    extra = [c for c in rows.column_names if c not in MODEL_INPUTS]
    rows = rows.remove_columns(extra) if extra else rows
    if not limit or int(limit) >= rows.num_rows:
        return rows
    # in memory: an on-disk shuffle writes its indices as cache-*.arrow into data/tokenized/, the tokenize
    # stage's output, which DVC then sees as modified (and re-runs tokenize for)
    return rows.shuffle(seed=seed, keep_in_memory=True).select(range(int(limit)), keep_in_memory=True)


def main(argv: list[str]):
    """Train, save, log; returns the trained model for a caller in the same process (tests compare it
    with the model reloaded from disk)."""
    experiment = one_item(argv, "train")
    setup = load_experiment(experiment, "train")  # checked by the config stage: types, ranges, required keys
    kind, method = setup["kind"], setup["method"]
    params = setup.pop("train")
    where = setting(experiment, "train")
    base = Path("models/base") / setup["model"]
    scratch = checkpoints.ROOT / experiment
    one_process_one_gpu(int(params.get("processes") or 1))
    run = {"precision": resolved_precision(params.get("precision"), kind, method), "device": device_description()}
    # one process, before any launch, records or checks what the checkpoints are made from; the launched
    # processes read its decision from the environment
    data = checkpoints.data_digest(Path("data/tokenized") / experiment)  # for the checkpoints and the recipe
    if os.environ.get("TUNEPIPE_LAUNCHED"):
        resume = os.environ.get("TUNEPIPE_RESUME") or None
    else:
        resume = checkpoints.resume_from(scratch, checkpoints.fingerprint(setup, params, data, base, run), where)
    launch_processes(experiment, params, resume)

    from transformers import Trainer, set_seed

    from stages import memory
    from stages.trainlog import LiveCurves, write_curves

    pin_threads(params["threads"])
    set_seed(setup["seed"])  # before a head or adapter is initialised
    labels = read_labels(setup) if not setup["generates"] else None
    # train and validation splits only: a test-only change never retrains
    train_rows = split_rows(experiment, "train", params.get("max_train_rows"), setup["seed"])
    eval_rows = split_rows(experiment, "validation", params.get("max_eval_rows"), setup["seed"])  # None: none
    tokenizer = load_tokenizer(base)
    budget = int(float(params["memory_limit_gb"]) * memory.GIB) if params.get("memory_limit_gb") else \
        memory.free_bytes(device(), int(params.get("processes") or 1))  # before the weights take their share
    # bf16 on a CPU, for a method that trains an adapter: the frozen base is stored and computes in bf16 and
    # the adapter trains in fp32, with no autocast (which would cast every fp32 weight again at every step)
    stored = "bfloat16" if bf16_weights(run, kind, method) else "float32"
    model = attach_method(load_base(kind, base, labels=labels, qlora=setup["qlora"], dtype=stored), kind, method,
                          params, base)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"[train] {experiment}: {kind} + {method}, {trainable:,} of {total:,} parameters trainable")

    args = training_arguments(params, setup, scratch, evaluate=eval_rows is not None,
                              precision="fp32" if stored == "bfloat16" else run["precision"])
    longest = max(len(ids) for ids in train_rows["input_ids"])
    outputs = {"token_head": len(labels or []), "sequence_head": 0}.get(kind)  # None: the vocabulary
    needs = memory.check_fits(memory.estimate(
        model, int(params["batch_size"]), longest, args.optim, args.activation_checkpointing, outputs,
        half_precision=args.bf16 or args.fp16 or stored == "bfloat16"), budget, where)

    collator = collator_for(kind, tokenizer, model)
    reports = Path("reports/train") / experiment
    trainer = (full_precision_evaluation() if stored == "bfloat16" else Trainer)(
                      model=model, args=args, train_dataset=train_rows, data_collator=collator,
                      eval_dataset=eval_rows, compute_metrics=None if setup["generates"] else head_accuracy,
                      callbacks=[LiveCurves(reports / "live")]
                      + ([] if args.load_best_model_at_end else [checkpoints.skip_final_checkpoint()]))
    # tokens the checkpoint had already trained, read now: the checkpoints are removed once the result is saved
    before = json.loads((Path(resume) / "trainer_state.json").read_text())["num_input_tokens_seen"] if resume else 0
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    # with several processes every one of them takes part in gathering the weights; the first one writes
    gathered = trainer.accelerator.get_state_dict(trainer.model) if args.world_size > 1 else None
    if not trainer.is_world_process_zero():
        return model
    with atomic_dir(Path("models/trained") / experiment) as out:
        save_trained(model, out, kind, method, labels, setup["qlora"], gathered, data, run)
    checkpoints.remove(scratch)  # the result is saved: the checkpoints have served

    losses = write_curves(reports / "live", trainer.state.log_history)
    if not losses:
        raise StageError(f"{where}: training logged no loss (0 steps? check epochs / max_steps)")
    evals = [entry["eval_loss"] for entry in trainer.state.log_history if "eval_loss" in entry]
    accuracy = [entry["eval_accuracy"] for entry in trainer.state.log_history if "eval_accuracy" in entry]
    real = int(trainer.state.num_input_tokens_seen)
    summary = {"steps": trainer.state.global_step, "rows": train_rows.num_rows, "trainable_params": trainable,
               "first_loss": round(losses[0]["loss"], 6), "final_loss": round(losses[-1]["loss"], 6),
               "final_eval_loss": round(evals[-1], 6) if evals else None,
               "final_eval_accuracy": accuracy[-1] if accuracy else None, "real_tokens": real,
               "pad_fraction": padding_share(trainer, collator), "memory_estimate_gib": needs}
    write_json(reports / "summary.json", summary)  # deterministic: same params, same bytes, resumed or not
    # wall-clock speed of the tokens this process trained (a resumed run trained only those after its checkpoint)
    speed = {"seconds": round(seconds, 1), "tokens_per_second": round((real - before) / seconds, 1),
             "resumed": bool(resume)}
    write_json(Path("reports/speed") / f"{experiment}.json", speed)  # wall-clock: differs run to run, kept apart
    print(f"[train] {experiment}: {summary['steps']} steps, loss {summary['first_loss']:.3f} -> "
          f"{summary['final_loss']:.3f}" + (f", validation loss {evals[-1]:.3f}" if evals else "")
          + f", {real} tokens at {speed['tokens_per_second']}/s, padding {summary['pad_fraction']:.1%}")
    return model


if __name__ == "__main__":
    run_stage(main)
