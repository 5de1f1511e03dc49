"""The train settings, each declared once with what it feeds.

A setting's `Feeds` says where its value goes and what a change to it does:
- `arg`: the TrainingArguments field(s) it sets as it is (tunepipe/training.py passes every one that is set;
  `unset` is what they get when no file sets it, where the Trainer's own default is not ours);
- `effect`: "result" (other weights: part of the checkpoints' fingerprint and of a merged model's card),
  "machine" (other bits of the same training, from how this machine runs it: fingerprinted, but no part of
  what made the model, so not on the card), or "none" (how the run is carried out: neither).
A new setting is one line here (and a default in defaults/, if it has one): training_arguments, the
checkpoints' fingerprint and the merged model's card read these declarations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field

from tunepipe.settings.fields import Int, Number, Strict


@dataclass(frozen=True)
class Feeds:
    arg: str | tuple[str, ...] | None = None
    effect: Literal["result", "machine", "none"] = "result"
    unset: Any = None


class Lora(Strict):
    r: Int | None = Field(default=None, gt=0)
    alpha: Number | None = Field(default=None, gt=0)
    dropout: Number | None = Field(default=None, ge=0, lt=1)
    target_modules: list[str] | str | None = None  # null: peft's choice for the architecture
    bias: Literal["none", "all", "lora_only"] | None = None
    modules_to_save: list[str] | None = None
    use_rslora: bool | None = None
    use_dora: bool | None = None


class PromptTuning(Strict):
    virtual_tokens: Int | None = Field(default=None, gt=0)
    init_text: str | None = None


BATCH = ("per_device_train_batch_size", "per_device_eval_batch_size")


class Train(Strict):
    lora: Annotated[Lora | None, Feeds()] = None  # the adapter (tunepipe/loading.py attach_method)
    prompt_tuning: Annotated[PromptTuning | None, Feeds()] = None
    learning_rate: Annotated[Number | None, Feeds("learning_rate")] = Field(default=None, gt=0)
    epochs: Annotated[Number | None, Feeds("num_train_epochs")] = Field(default=None, gt=0)
    max_steps: Annotated[Int | None, Feeds("max_steps")] = Field(default=None, gt=0)
    batch_size: Annotated[Int | None, Feeds(BATCH)] = Field(default=None, gt=0)  # per process
    grad_accum: Annotated[Int | None, Feeds("gradient_accumulation_steps")] = Field(default=None, gt=0)
    threads: Annotated[Int | None, Feeds(effect="machine")] = Field(default=None, gt=0)  # torch threads, pinned
    max_train_rows: Annotated[Int | None, Feeds()] = Field(default=None, gt=0)  # a seeded subset
    max_eval_rows: Annotated[Int | None, Feeds()] = Field(default=None, gt=0)
    eval_steps: Annotated[Int | None, Feeds("eval_steps")] = Field(default=None, gt=0)  # unset: each epoch
    checkpoint_steps: Annotated[Int | None, Feeds("save_steps", "none", 50)] = Field(default=None, gt=0)
    scheduler: Annotated[str | None, Feeds("lr_scheduler_type")] = None
    warmup_steps: Annotated[Int | None, Feeds("warmup_steps")] = Field(default=None, ge=0)
    weight_decay: Annotated[Number | None, Feeds("weight_decay")] = Field(default=None, ge=0)
    optim: Annotated[str | None, Feeds("optim")] = None  # unset: by method and device (training.py)
    sampling: Annotated[Literal["group_by_length", "random", "sequential"] | None,
                        Feeds("train_sampling_strategy", unset="group_by_length")] = None
    precision: Annotated[Literal["auto", "fp32", "bf16", "fp16"] | None, Feeds()] = None  # tunepipe/devices.py
    processes: Annotated[Int | None, Feeds()] = Field(default=None, gt=0)  # the batch size is per process
    accelerate_config: Annotated[str | None, Feeds(effect="machine")] = None  # a path on this machine
    memory_limit_gb: Annotated[Number | None, Feeds(effect="none")] = Field(default=None, gt=0)
    keep_best: Annotated[Literal["loss", "accuracy"] | None, Feeds()] = None
    # activations recomputed in the backward pass instead of kept (the same values: it changes memory and time,
    # not the weights); unset: on for QLoRA, and for any adapter on a GPU (memory is the limit), off on a CPU
    gradient_checkpointing: Annotated[bool | None, Feeds("activation_checkpointing", effect="none")] = None
    # a preference objective's own settings: fields of its TRL config class (tunepipe/objectives.py lists them)
    dpo: Annotated[dict[str, Any] | None, Feeds()] = None
    kto: Annotated[dict[str, Any] | None, Feeds()] = None
    grpo: Annotated[dict[str, Any] | None, Feeds()] = None


def declarations() -> dict[str, Feeds]:
    """Each train setting's Feeds, read from the Train model (looked up when called, so a test can extend it)."""
    return {name: next(m for m in field.metadata if isinstance(m, Feeds)) for name, field in Train.model_fields.items()}


def argument_values(params: dict[str, Any]) -> dict[str, Any]:
    """The TrainingArguments fields the settings set: each declared `arg`, from the file or its `unset`."""
    values = {}
    for name, feeds in declarations().items():
        value = params.get(name, feeds.unset)
        for arg in (feeds.arg,) if isinstance(feeds.arg, str) else feeds.arg or ():
            if value is not None:
                values[arg] = value
    return values


def fingerprinted(params: dict[str, Any]) -> dict[str, Any]:
    """The settings a checkpoint must share to be resumed: every one that changes the weights or their bits."""
    effects = {name: feeds.effect for name, feeds in declarations().items()}
    return {name: value for name, value in params.items() if effects[name] != "none"}


def on_card(params: dict[str, Any]) -> dict[str, Any]:
    """The settings that made the model, as a merged model's card shows them (no machine details, no paths)."""
    effects = {name: feeds.effect for name, feeds in declarations().items()}
    return {name: value for name, value in params.items() if effects[name] == "result"}
