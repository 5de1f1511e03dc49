"""A preference objective's trainer: TRL's own class and config (tunepipe/objectives.py), over the rows the
tokenize stage wrote in TRL's columns (tunepipe/pairs.py), so TRL tokenizes nothing again.

The reference the policy is measured against is TRL's choice, made explicit here: for an adapter, a frozen
copy of the adapter training starts from ("ref"; a new adapter's copy is the base itself, its update being
zero), for full training a frozen copy of the starting weights. With `init_from`, training starts from that
experiment's model, so it is the reference too: SFT, then DPO against the SFT model, as the recipes do.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

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


def build_preference_trainer(model, args, setup: dict[str, Any], tokenizer, train_rows, eval_rows, callbacks: list):
    """TRL's trainer for the objective, handed the tokenized rows as they are."""
    import trl

    trainer_class = getattr(trl, OBJECTIVES[setup["objective"]].trainer)

    class PreTokenized(trainer_class):
        def _prepare_dataset(self, dataset, *unused):  # tokenized by the tokenize stage, the way TRL does
            return dataset

    return PreTokenized(model=model, args=args, processing_class=tokenizer, train_dataset=train_rows,
                        eval_dataset=eval_rows, callbacks=callbacks)


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
