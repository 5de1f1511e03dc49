"""A preference objective's trainer: TRL's own class and config (tunepipe/objectives.py), over the rows the
tokenize stage wrote in TRL's columns (tunepipe/pairs.py), so TRL tokenizes nothing again.

The reference the policy is measured against is TRL's choice, made explicit here: for an adapter, a frozen
copy of the adapter training starts from ("ref"; a new adapter's copy is the base itself, its update being
zero), for full training a frozen copy of the starting weights. With `init_from`, training starts from that
experiment's model, so it is the reference too: SFT, then DPO against the SFT model, as the recipes do.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tunepipe.errors import StageError
from tunepipe.objectives import OBJECTIVES

REFERENCE_ADAPTER = "ref"  # the name TRL gives the frozen copy of a PEFT model's starting adapter


def load_start(setup: dict[str, Any], base: Path, stored: str):
    """The model an `init_from` experiment trained, made trainable again: its adapter over the same base (on
    the same 4-bit base for QLoRA), or its whole weights."""
    from peft import PeftModel, prepare_model_for_kbit_training

    from tunepipe.loading import load_base

    start = Path("models/trained") / setup["init_from"]
    if setup["method"] == "full":
        return load_base(setup["kind"], start, dtype=stored)
    model = load_base(setup["kind"], base, qlora=setup["qlora"], dtype=stored)
    if setup["method"] == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return PeftModel.from_pretrained(model, start, is_trainable=True)


def config_class(objective: str):
    import trl

    return getattr(trl, OBJECTIVES[objective].config)


def objective_arguments(objective: str, params: dict[str, Any], decided: dict[str, Any], declared: dict[str, Any]):
    """A preference objective's TRL config: the same arguments, its own settings (train.<objective>), and
    what TRL would otherwise decide differently: its older checkpointing switch follows ours, rows past
    max_length are already left out (listed by tokenize), and rows are drawn as the objective needs
    (objectives.py: a pair has no single length to group by)."""
    if params.get("sampling") is None:
        declared["train_sampling_strategy"] = OBJECTIVES[objective].sampling
    config = config_class(objective)
    decided["gradient_checkpointing"] = decided["activation_checkpointing"]
    if "max_length" in {field.name for field in dataclasses.fields(config)}:
        decided["max_length"] = None
    arguments = config(**{**decided, **declared, **(params.get(objective) or {})})
    block = getattr(arguments, "steps_per_generation", 1) * getattr(arguments, "num_iterations", 1)
    if block > 1 and arguments.save_steps % block:  # TRL keeps a generation block's completions in memory only
        raise StageError(f"train.checkpoint_steps: {arguments.save_steps} would checkpoint inside a block of {block} "
                         "steps that share one generation, which a resumed run cannot restore: use a multiple of it")
    return arguments


def copies_reference(setup: dict[str, Any], args) -> bool:
    """Whether TRL loads a second whole model as the reference: for full training (an adapter's reference is
    a frozen copy of the adapter alone), except GRPO without its KL term (beta 0), which needs none."""
    return setup["method"] == "full" and (setup["objective"] != "grpo" or getattr(args, "beta", 0) != 0)


def reward_totals(history: list[dict[str, Any]]) -> dict[str, Any]:
    """A preference objective's first and last implicit rewards on validation (TRL's keys; none for SFT)."""
    grpo = [entry for entry in history if "eval_reward" in entry]
    if grpo:  # GRPO's mean reward over its validation completions
        return {"first_eval_reward": round(grpo[0]["eval_reward"], 6), "final_eval_reward": round(grpo[-1]["eval_reward"], 6)}
    evals = [entry for entry in history if "eval_rewards/margins" in entry]
    if not evals:
        return {}
    # DPO's accuracy: the share of pairs whose chosen answer earns the higher reward (KTO has no pairs)
    return {f"{which}_eval_reward_{name}": round(evals[index][f"eval_rewards/{name}"], 6)
            for which, index in (("first", 0), ("final", -1)) for name in ("accuracies", "margins")
            if f"eval_rewards/{name}" in evals[index]}


def build_preference_trainer(model, args, setup: dict[str, Any], tokenizer, train_rows, eval_rows, callbacks: list):
    """TRL's trainer for the objective, handed the tokenized rows as they are."""
    import datasets
    import trl

    # a map TRL runs (reference log-probabilities precomputed) writes its result beside the rows it reads,
    # which would land in data/tokenized/, the tokenize stage's output: in memory instead
    datasets.disable_caching()
    trainer_class = getattr(trl, OBJECTIVES[setup["objective"]].trainer)
    if setup["objective"] == "grpo":
        return grpo_trainer(trainer_class, model, args, setup, tokenizer, (train_rows, eval_rows), callbacks)

    class PreTokenized(trainer_class):
        def _prepare_dataset(self, dataset, processing_class, args, name):
            """Tokenized by the tokenize stage, the way TRL does; for KTO, what TRL adds after tokenizing: each
            row's mismatched answer for the KL estimate (the batch's answers rotated by one, as TRL builds them;
            in memory, so nothing is written into the tokenize stage's output)."""
            if not getattr(self, "calculate_KL", False):
                return dataset
            return dataset.map(mismatched_answers, batched=True, batch_size=args.per_device_train_batch_size,
                               keep_in_memory=True)

    return adapters_in_fp32(PreTokenized(model=model, args=args, processing_class=tokenizer, train_dataset=train_rows,
                                         eval_dataset=eval_rows, callbacks=callbacks))


def adapters_in_fp32(trainer):
    """TRL casts a 4-bit model's adapters to bf16 once it has copied the reference adapter (in fp32). Every
    adapter trains in fp32 here, so they go back to fp32, from that exact copy where there is one: the first
    step's policy is then the reference, bit for bit."""
    import torch

    named = dict(trainer.model.named_parameters())
    for name, parameter in named.items():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            copy = named.get(name.replace(".default.", ".ref."))
            parameter.data = (copy if copy is not None and copy is not parameter else parameter).data.float().clone()
    return trainer


def grpo_trainer(trainer_class, model, args, setup: dict[str, Any], tokenizer, rows: tuple, callbacks: list):
    """GRPO on the task's prompts, rewarded by the task's metric on each completion and a format reward."""
    from tunepipe.rewards import reward_functions
    from tunepipe.rollouts import as_trl_prompts

    stops = model.generation_config.eos_token_id  # every token generation stops at (one id or several)
    stops = {tokenizer.eos_token_id, *(stops if isinstance(stops, list) else [stops] if stops is not None else [])}
    rewards = reward_functions(setup["reward"]["metric"], setup["reward"]["score"], args.max_completion_length, stops)
    train_rows, eval_rows = (as_trl_prompts(r) if r is not None else None for r in rows)
    return adapters_in_fp32(trainer_class(model=model, reward_funcs=rewards, args=args, processing_class=tokenizer,
                                          train_dataset=train_rows, eval_dataset=eval_rows, callbacks=callbacks))


def mismatched_answers(rows: dict[str, list]) -> dict[str, list]:
    rows["KL_completion_ids"] = rows["completion_ids"][-1:] + rows["completion_ids"][:-1]
    return rows


def reference_logps(trainer, batch: dict) -> tuple[Any, Any]:
    """The reference model's summed log-probabilities of the chosen and rejected answers of a collated batch,
    as the trainer computes them (tests read which model the reference is through this)."""
    import torch

    with torch.no_grad():
        return trainer.compute_ref_log_probs(trainer.ref_model if trainer.ref_model is not None else trainer.model,
                                             trainer._prepare_inputs(batch))


def without_reference(model):
    """The policy alone, for saving: TRL's frozen reference adapter is not part of the result."""
    if REFERENCE_ADAPTER in getattr(model, "peft_config", {}):
        model.delete_adapter(REFERENCE_ADAPTER)
    return model
