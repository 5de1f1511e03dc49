"""What an experiment file may say, typed: the sections of experiments/<name>.yaml (and of a defaults file:
the same keys, every one optional). tunepipe/settings/resolve.py fills the gaps and checks the whole.

`dataset` and `model` name an entry of the profile's params.yaml or describe the experiment's own
(tunepipe/sources.py); the train section is declared in tunepipe/settings/train.py.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from tunepipe.kinds import KINDS, METHODS, METRICS
from tunepipe.objectives import NAMES as OBJECTIVES
from tunepipe.settings.fields import Int, Number, Strict
from tunepipe.settings.train import Train
from tunepipe.sources import DataSpec, ModelSpec

GOAL_OPS = (">=", "<=", ">", "<")


class PromptTemplate(Strict):
    instruction: str | None = None
    input: str | None = None
    output: str | None = None
    labels: dict[str, str] | None = None  # the verbaliser: label -> the word the model says


class Tokenize(Strict):
    max_length: Int | None = Field(default=None, gt=0)
    eval_max_length: Int | None = Field(default=None, gt=0)
    system_prompt: str | None = None
    prompt: PromptTemplate | None = None
    assistant_turns: Literal["all", "last"] | None = None  # chat rows: which assistant turns carry the loss
    chat_template: str | None = None  # a Jinja chat template instead of the tokenizer's own


class Decoding(Strict):
    do_sample: bool | None = None
    temperature: Number | None = Field(default=None, gt=0)
    top_p: Number | None = Field(default=None, gt=0, le=1)
    top_k: Int | None = Field(default=None, ge=1)
    seed: Int | None = None
    repetition_penalty: Number | None = Field(default=None, gt=0)
    no_repeat_ngram_size: Int | None = Field(default=None, ge=1)
    stop: list[str] | None = None

    @field_validator("stop")
    @classmethod
    def non_empty(cls, stop: list[str] | None) -> list[str] | None:
        if stop is not None and not all(stop):
            raise ValueError("a list of non-empty strings (an empty one would end every answer at once)")
        return stop

    @model_validator(mode="after")
    def sampling_is_seeded(self):
        sampled = [key for key in ("temperature", "top_p", "top_k", "seed") if getattr(self, key) is not None]
        if not self.do_sample and sampled:
            raise ValueError(f"{', '.join(sampled)} appl{'y' if len(sampled) > 1 else 'ies'} only with do_sample: true "
                             "(decoding is greedy otherwise)")
        if self.do_sample and self.seed is None:
            raise ValueError("sampling needs a seed, so the same settings give the same outputs")
        return self


class Predict(Strict):
    max_rows: Int | None = Field(default=None, gt=0)
    max_new_tokens: Int | None = Field(default=None, gt=0)
    batch_size: Int | None = Field(default=None, gt=0)
    threads: Int | None = Field(default=None, gt=0)
    decoding: Decoding | None = None
    pair_orders: Literal["given", "both"] | None = None  # a head on sentence pairs: average both orders' probabilities
    # the dtype the model loads in; auto: half precision for a language model on a GPU, float32 elsewhere
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None
    # a generator behind a gate (score.gate): rows opening with one of these are generated again without it
    answer_anyway: list[str] | None = None

    @field_validator("answer_anyway")
    @classmethod
    def openings(cls, phrases: list[str] | None) -> list[str] | None:
        if phrases is not None and not all(phrase.strip() for phrase in phrases):
            raise ValueError("a list of non-empty strings (the openings of the refusals to answer past)")
        return phrases


class Merge(Strict):
    # auto: 1e-3 for a float32 merge, 5e-2 for bfloat16 or float16 (their rounding alone moves logits that far)
    tolerance: Union[Literal["auto"], Annotated[Number, Field(gt=0)], None] = None
    threads: Int | None = Field(default=None, gt=0)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None  # auto: as predict's
    by_shard: Union[bool, Literal["auto"], None] = None


class QLora(Strict):
    quant_type: Literal["nf4", "fp4"] | None = None
    double_quant: bool | None = None
    # auto: the GPU's half precision (bf16 where native, else fp16), float32 on a CPU (tunepipe/devices.py)
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None


class Experiment(Strict):
    """One experiment file (or a defaults file: the same keys, every one optional)."""
    task: str | None = None          # a label: the report groups by it; it changes no result
    description: str | None = None   # a label
    dataset: Union[str, DataSpec, None] = None
    model: Union[str, ModelSpec, None] = None
    kind: Literal[tuple(KINDS)] | None = None  # type: ignore[valid-type]
    method: Literal[METHODS] | None = None  # type: ignore[valid-type]
    metric: Literal[METRICS] | None = None  # type: ignore[valid-type]
    objective: Literal[OBJECTIVES] | None = None  # type: ignore[valid-type]  # unset: sft (tunepipe/objectives.py)
    init_from: str | None = None  # another experiment of the profile whose trained model this one starts from
    seed: Int | None = None
    qlora: QLora | None = None
    tokenize: Tokenize | None = None
    train: Train | None = None
    predict: Predict | None = None
    score: dict[str, Any] | None = None  # the metric module's own options, passed to its compute()
    merge: Union[bool, Merge, None] = None  # true (or settings): fold the LoRA into its base
    # {score: ">= 82" | "<= 10" | "> before" | "> rule"}, a score of another line as "cascade.<score>": judged
    # by the report
    targets: dict[str, str | list[str]] | None = None

    @field_validator("targets")
    @classmethod
    def goals(cls, targets: dict[str, Any] | None) -> dict[str, Any] | None:
        for key, goal in ((key, goal) for key, goals in (targets or {}).items()
                          for goal in (goals if isinstance(goals, list) else [goals])):
            op, _, bound = str(goal).partition(" ")
            if op not in GOAL_OPS or not bound:
                raise ValueError(f"{key}: {goal!r} is not '<op> <number>', '<op> before' or '<op> rule' "
                                 f"(op: {' '.join(GOAL_OPS)})")
            if bound not in ("before", "rule"):
                try:
                    float(bound)
                except ValueError:
                    raise ValueError(f"{key}: {bound!r} is neither a number nor 'before' or 'rule'") from None
        return targets
