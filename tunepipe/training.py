"""One Trainer loop for every kind and method (tunepipe/kinds.py): its arguments, its rows, its evaluation.

- batches grouped by length and padded per batch (on real DialogSum rows 4.6% of tokens are padding,
  against 33% for random batches: bench/padding.py);
- the validation split evaluated every `eval_steps` (default: each epoch), curves logged through DVCLive
  (tunepipe/trainlog.py);
- checkpoints every `checkpoint_steps` outside DVC's outputs, so a killed run resumes where it stopped and
  ends with the same weights (tunepipe/checkpoints.py);
- a memory estimate before the first step, and a one-line stop when the run cannot fit (tunepipe/memory.py);
- `processes: N` re-launches the stage under `accelerate launch` (DDP; FSDP or DeepSpeed through an
  accelerate config file in `accelerate_config`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tunepipe import checkpoints, memory
from tunepipe.devices import device, frozen_dtype, qlora_compute_dtype
from tunepipe.errors import StageError
from tunepipe.kinds import ADAPTER_METHODS
from tunepipe.loading import attach_method, load_base
from tunepipe.objectives import OBJECTIVES
from tunepipe.pairs import COLUMNS as PAIR_COLUMNS, UNPAIRED_COLUMNS
from tunepipe.rollouts import COLUMNS as ROLLOUT_COLUMNS
from tunepipe.settings import train as train_settings

# the columns a model (or TRL's preference collator) takes; ids and maps stay behind
MODEL_INPUTS = ("input_ids", "labels", "token_type_ids", *PAIR_COLUMNS, *UNPAIRED_COLUMNS, *ROLLOUT_COLUMNS)


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
    """TrainingArguments from the train settings (each one's `arg`, declared in tunepipe/settings/train.py) and
    what the stage decides itself: device, precision, evaluation and saving."""
    import torch
    from transformers import TrainingArguments

    cuda, method = torch.cuda.is_available(), setup["method"]
    every = params.get("eval_steps")
    keep_best = bool(params.get("keep_best")) and evaluate
    declared = train_settings.argument_values(params)
    # QLoRA as its paper: the optimizer's state paged in 8 bits where CUDA is there to page it; bitsandbytes
    # has no paged optimizer on a CPU
    declared.setdefault("optim", "paged_adamw_8bit" if method == "qlora" and cuda else "adamw_torch")
    if keep_best:  # a checkpoint at each evaluation, to end with the best one's weights
        declared["save_steps"] = every
    decided = dict(
        output_dir=str(scratch), use_cpu=not cuda, seed=setup["seed"], bf16=precision == "bf16",
        fp16=precision == "fp16",
        # across processes a language model's loss is averaged over all tokens of the global batch; a head's
        # loss is already a mean per process, which the Trainer would otherwise count once per process
        average_tokens_across_devices=setup["generates"],
        # QLoRA as its paper, and any adapter on a GPU: activations recomputed in the backward pass (switched on
        # here only: the Trainer enables it once, non-reentrant, so no input needs to require gradients)
        activation_checkpointing=method == "qlora" or (cuda and method in ADAPTER_METHODS),
        activation_checkpointing_kwargs={"use_reentrant": False},
        eval_strategy=("steps" if every else "epoch") if evaluate else "no",
        # keep_best: end with the weights of the evaluation that scored best on validation (a checkpoint at
        # each evaluation), instead of the last step's: early stopping chosen on validation, never on test
        save_strategy="steps", save_total_limit=2,
        load_best_model_at_end=keep_best, metric_for_best_model=params.get("keep_best") if keep_best else None,
        logging_steps=1, report_to="none", include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0, disable_tqdm=False)
    if not setup.get("objective"):
        return TrainingArguments(**{**decided, **declared})  # a declared setting wins over the stage's choice
    from tunepipe.preference_training import objective_arguments

    return objective_arguments(setup["objective"], params, decided, declared)


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


def resume_point(experiment: str, setup: dict[str, Any], params: dict[str, Any], data: str, base: Path,
                 run: dict[str, str], where: str) -> str | None:
    """The checkpoint to resume from, or None. One process, before any launch, records or checks what the
    checkpoints are made from; the launched processes read its decision from the environment."""
    if os.environ.get("TUNEPIPE_LAUNCHED"):
        return os.environ.get("TUNEPIPE_RESUME") or None
    made_from = checkpoints.fingerprint(setup, params, data, base, run)
    return checkpoints.resume_from(checkpoints.ROOT / experiment, made_from, where)


def build_model(setup: dict[str, Any], params: dict[str, Any], base: Path, run: dict[str, str],
                labels: list[str] | None):
    """The base wrapped by the method, and the dtype its frozen weights are stored in (devices.frozen_dtype):
    half precision for a language model's adapter where the device computes in it; the adapter trains in
    fp32 (peft keeps it so). On a CPU with no autocast (which would cast every fp32 weight again at every
    step); on a GPU under the Trainer's autocast, as the peers train."""
    kind, method = setup["kind"], setup["method"]
    stored = frozen_dtype(run["precision"], run["device"] != "cpu", kind, method)
    if setup.get("init_from"):  # another experiment's trained model, trainable again
        from tunepipe.preference_training import load_start

        model = load_start(setup, base, stored)
    else:
        model = attach_method(load_base(kind, base, labels=labels, qlora=setup["qlora"], dtype=stored), kind, method,
                              params, base)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"[train] {setup['name']}: {kind} + {method}, {trainable:,} of {total:,} parameters trainable")
    return model, stored


def memory_budget(params: dict[str, Any]) -> int:
    """`memory_limit_gb`, or the memory free now: measured before the weights take their share."""
    if params.get("memory_limit_gb"):
        return int(float(params["memory_limit_gb"]) * memory.GIB)
    return memory.free_bytes(device(), int(params.get("processes") or 1))


def check_memory(model, params: dict[str, Any], args, rows: tuple, labels: list[str] | None, setup: dict[str, Any],
                 base: Path, stored: str, budget: int, where: str) -> dict[str, Any]:
    """The estimate for the longest training row (and the longest validation row) against `budget`: a run
    that cannot fit stops here, in one line."""
    import torch

    from tunepipe.activations import kept_activations

    train_rows, eval_rows = rows
    completion = getattr(args, "max_completion_length", 0) or 0  # GRPO's completions
    longest = max(row_lengths(train_rows, completion))
    eval_len = max(row_lengths(eval_rows, completion), default=0) if eval_rows is not None else 0
    # a preference batch runs each pair's chosen and rejected answers side by side
    kind, batch = setup["kind"], int(params["batch_size"]) * (
        OBJECTIVES[setup["objective"]].sequences if setup.get("objective") else 1)
    outputs = {"token_head": len(labels or []), "sequence_head": 0}.get(kind)  # None: the vocabulary
    compute = getattr(torch, qlora_compute_dtype(setup["qlora"]["compute_dtype"])) if setup.get("qlora") else None
    kept = kept_activations(model, kind, setup["method"], params, base, batch, longest, args.activation_checkpointing,
                            compute)
    half = args.bf16 or args.fp16 or stored != "float32"
    parts = memory.estimate(model, batch, longest, args.optim, kept, outputs, eval_len, logits_bytes=2 if half else 4,
                            slack=memory.ALLOCATOR_SLACK[device()])
    if setup.get("objective"):
        from tunepipe.preference_training import copies_reference

        if copies_reference(setup, args):  # TRL loads a frozen copy of the whole model as the reference
            parts["reference"] = parts["weights"]
    return memory.check_fits(parts, budget, where)


def row_lengths(rows, completion: int = 0) -> list[int]:
    """Each row's tokens: a pair's prompt and its longer answer; a GRPO prompt and `completion` more."""
    if "input_ids" in rows.column_names:
        return [len(ids) for ids in rows["input_ids"]]
    if "completion_ids" in rows.column_names:  # one answer marked desirable or not
        return [len(p) + len(c) for p, c in zip(rows["prompt_ids"], rows["completion_ids"])]
    if "prompt_json" in rows.column_names:  # a prompt GRPO completes: room for the longest completion
        return [len(p) + completion for p in rows["prompt_ids"]]
    return [len(p) + max(len(c), len(r)) for p, c, r in zip(*(rows[name] for name in PAIR_COLUMNS))]


def build_trainer(model, args, setup: dict[str, Any], rows: tuple, collator, tokenizer, cpu_bf16: bool, reports: Path):
    """The Trainer (TRL's for a preference objective), logging curves to reports/<experiment>/live; evaluating
    in fp32 where a CPU run's base is bf16 (`cpu_bf16`; on a GPU under the same autocast as training)."""
    from transformers import Trainer

    from tunepipe.trainlog import LiveCurves

    train_rows, eval_rows = rows
    callbacks = [LiveCurves(reports / "live")] + ([] if args.load_best_model_at_end else [checkpoints.skip_final_checkpoint()])
    if setup.get("objective"):
        from tunepipe.preference_training import build_preference_trainer

        return build_preference_trainer(model, args, setup, tokenizer, train_rows, eval_rows, callbacks)
    return (full_precision_evaluation() if cpu_bf16 else Trainer)(
        model=model, args=args, train_dataset=train_rows, data_collator=collator, eval_dataset=eval_rows,
        compute_metrics=None if setup["generates"] else head_accuracy, callbacks=callbacks)


def tokens_seen(checkpoint: str | None) -> int:
    """Tokens a checkpoint had already trained, read before training: the checkpoints are removed once the
    result is saved."""
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text())["num_input_tokens_seen"] if checkpoint else 0


def summarize(trainer, collator, train_rows, model, needs: dict[str, Any], reports: Path, where: str) -> dict[str, Any]:
    """The run's totals for summary.json: deterministic, the same bytes for the same params, resumed or not."""
    from tunepipe.preference_training import reward_totals
    from tunepipe.trainlog import write_curves

    losses = write_curves(reports / "live", trainer.state.log_history)
    if not losses:
        raise StageError(f"{where}: training logged no loss (0 steps? check epochs / max_steps)")
    evals = [entry["eval_loss"] for entry in trainer.state.log_history if "eval_loss" in entry]
    accuracy = [entry["eval_accuracy"] for entry in trainer.state.log_history if "eval_accuracy" in entry]
    return {"steps": trainer.state.global_step, "rows": train_rows.num_rows,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "first_loss": round(losses[0]["loss"], 6), "final_loss": round(losses[-1]["loss"], 6),
            "final_eval_loss": round(evals[-1], 6) if evals else None,
            "final_eval_accuracy": accuracy[-1] if accuracy else None,
            "real_tokens": int(trainer.state.num_input_tokens_seen),
            "pad_fraction": padding_share(trainer, collator) if collator else None, "memory_estimate_gib": needs,
            **reward_totals(trainer.state.log_history)}


def timed_training(trainer, resume: str | None) -> dict[str, Any]:
    """Train; the wall-clock speed of the tokens this process trained (a resumed run trained only those after
    its checkpoint), which differs run to run and is kept apart from the results."""
    before = tokens_seen(resume)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    real = int(trainer.state.num_input_tokens_seen)
    return {"seconds": round(seconds, 1), "tokens_per_second": round((real - before) / seconds, 1),
            "resumed": bool(resume)}
