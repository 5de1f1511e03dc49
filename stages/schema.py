"""What an experiment file may say, typed: experiments/<name>.yaml with its defaults filled in and checked.

An experiment is one file. Its gaps are filled from three defaults files, later ones winning, key by key:

    defaults/base.yaml  <  defaults/kind/<kind>.yaml  <  defaults/method/<method>.yaml  <  experiments/<name>.yaml

Each file is checked on its own first, so an unknown key or a wrong type is reported in the file and on the
line where it was written ("experiments/x.yaml:7: train.eval_step: unknown key (known: ...)"); then the
merged whole is checked for what no file set (a LoRA needs its rank) and for pairs that do not fit (a token
head cannot be prompt-tuned). Nothing heavy is imported: a bad file fails in well under a second.

`dataset` and `model` name an entry of the profile's params.yaml or describe the experiment's own
(stages/sources.py).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Union

from typing import Annotated

from pydantic import BeforeValidator, Field, StrictInt, field_validator, model_validator

from stages.common import CODE_ROOT, StageError
from stages.formats import READERS, known_options
from stages.modeling import KINDS, MERGEABLE, METHODS, METRICS, check_bitsandbytes
from stages.settings import EXPERIMENTS
from stages.sources import DataSpec, ModelSpec, Strict, check_file, infer_source, read_yaml, registry_entry, shown

DEFAULTS = CODE_ROOT / "defaults"


def not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):  # YAML's `yes`/`true` where a number belongs is a mistake, not 1
        raise ValueError(f"expected a number, got {value!r}")
    return value


Number = Annotated[float, BeforeValidator(not_a_bool)]  # 5e-4 written without a dot is a string to PyYAML: parsed
Int = StrictInt
GOAL_OPS = (">=", "<=", ">", "<")


# --- the stages' own sections ------------------------------------------------------------------------------

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


class Train(Strict):
    lora: Lora | None = None
    prompt_tuning: PromptTuning | None = None
    learning_rate: Number | None = Field(default=None, gt=0)
    epochs: Number | None = Field(default=None, gt=0)
    max_steps: Int | None = Field(default=None, gt=0)
    batch_size: Int | None = Field(default=None, gt=0)
    grad_accum: Int | None = Field(default=None, gt=0)
    threads: Int | None = Field(default=None, gt=0)
    max_train_rows: Int | None = Field(default=None, gt=0)
    max_eval_rows: Int | None = Field(default=None, gt=0)
    eval_steps: Int | None = Field(default=None, gt=0)
    checkpoint_steps: Int | None = Field(default=None, gt=0)
    scheduler: str | None = None
    warmup_steps: Int | None = Field(default=None, ge=0)
    weight_decay: Number | None = Field(default=None, ge=0)
    optim: str | None = None
    sampling: Literal["group_by_length", "random", "sequential"] | None = None
    precision: Literal["auto", "fp32", "bf16", "fp16"] | None = None
    processes: Int | None = Field(default=None, gt=0)
    accelerate_config: str | None = None
    memory_limit_gb: Number | None = Field(default=None, gt=0)
    keep_best: Literal["loss", "accuracy"] | None = None


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
    # a generator behind a gate (score.gate): rows opening with one of these are generated again without it
    answer_anyway: list[str] | None = None

    @field_validator("answer_anyway")
    @classmethod
    def openings(cls, phrases: list[str] | None) -> list[str] | None:
        if phrases is not None and not all(phrase.strip() for phrase in phrases):
            raise ValueError("a list of non-empty strings (the openings of the refusals to answer past)")
        return phrases


class Merge(Strict):
    tolerance: Number | None = Field(default=None, gt=0)
    threads: Int | None = Field(default=None, gt=0)
    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    by_shard: Union[bool, Literal["auto"], None] = None


class QLora(Strict):
    quant_type: Literal["nf4", "fp4"] | None = None
    double_quant: bool | None = None
    compute_dtype: Literal["float32", "bfloat16", "float16"] | None = None


class Experiment(Strict):
    """One experiment file (or a defaults file: the same keys, every one optional)."""
    task: str | None = None          # a label: the report groups by it; it changes no result
    description: str | None = None   # a label
    dataset: Union[str, DataSpec, None] = None
    model: Union[str, ModelSpec, None] = None
    kind: Literal[tuple(KINDS)] | None = None  # type: ignore[valid-type]
    method: Literal[METHODS] | None = None  # type: ignore[valid-type]
    metric: Literal[METRICS] | None = None  # type: ignore[valid-type]
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


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def defaults_files(kind: str, method: str) -> list[Path]:
    return [DEFAULTS / "base.yaml", DEFAULTS / "kind" / f"{kind}.yaml", DEFAULTS / "method" / f"{method}.yaml"]


def data_spec(setup: dict[str, Any], name: str, root: Path) -> tuple[str, dict[str, Any]]:
    """(dataset name, its download + convert spec): a params.yaml entry, or the experiment's own."""
    dataset = setup["dataset"]
    spec = registry_entry("datasets", dataset, DataSpec, root) if isinstance(dataset, str) else dict(dataset)
    spec.setdefault("source", infer_source(spec, (("path", "local"), ("url", "url"), ("repo_id", "hub"))))
    return (dataset if isinstance(dataset, str) else name), spec


def model_spec(setup: dict[str, Any], name: str, root: Path) -> tuple[str, dict[str, Any]]:
    model = setup["model"]
    spec = registry_entry("models", model, ModelSpec, root) if isinstance(model, str) else dict(model)
    spec.setdefault("source", infer_source(spec, (("package", "package"), ("path", "local"), ("repo_id", "hub"))))
    return (model if isinstance(model, str) else name), spec


REQUIRED = {"tokenize": ("max_length",), "train": ("epochs", "batch_size", "learning_rate", "threads"),
            "predict": ("batch_size",), "merge": ("tolerance",)}


def resolve(name: str, root: Path = Path(".")) -> dict[str, Any]:
    """experiments/<name>.yaml with its defaults, checked: every section a stage reads, filled in."""
    path = root / EXPERIMENTS / f"{name}.yaml"
    where = shown(path)
    own = read_yaml(path)
    check_file(own, path, Experiment)
    for key in ("dataset", "model", "kind", "method", "metric"):
        if own.get(key) is None:
            raise StageError(f"{where}: missing required key '{key}'")
    if isinstance(own["dataset"], dict) and not own["dataset"].get("format"):
        raise StageError(f"{where}: dataset.format: missing (one of {', '.join(sorted(READERS))})")
    merged: dict[str, Any] = {}
    for file in defaults_files(own["kind"], own["method"]):
        layer = read_yaml(file)
        check_file(layer, file, Experiment)
        merged = deep_merge(merged, layer)
    # a defaults file's `merge` holds settings; only the experiment's own `merge` asks for a merge stage
    merge_settings = merged.pop("merge", None) or {}
    wants_merge = own.get("merge")
    merged = deep_merge(merged, {k: v for k, v in own.items() if k != "merge"})
    if wants_merge:
        merged["merge"] = deep_merge(merge_settings, wants_merge if isinstance(wants_merge, dict) else {})
    setup = check_file(merged, path, Experiment).model_dump(exclude_unset=True)
    kind, method = setup["kind"], setup["method"]
    if method not in KINDS[kind].methods:
        raise StageError(f"{where}: method: '{method}' does not fit kind '{kind}' "
                         f"(a {kind} takes {', '.join(KINDS[kind].methods)})")
    if method == "qlora":
        check_bitsandbytes(f"{where}: method")
    elif own.get("qlora"):
        raise StageError(f"{where}: qlora: 4-bit settings need method qlora, not '{method}'")
    if "merge" in setup and method not in MERGEABLE:
        raise StageError(f"{where}: merge: method '{method}' has no low-rank update to merge "
                         f"(merge applies to {', '.join(MERGEABLE)})")
    for section, keys in REQUIRED.items():
        if section == "merge" and "merge" not in setup:
            continue
        if section == "predict" and KINDS[kind].generates:
            keys = (*keys, "max_new_tokens")
        elif section == "predict" and (setup.get("predict") or {}).get("answer_anyway"):
            raise StageError(f"{where}: predict: answer_anyway applies to a model that generates, not a {kind}")
        values = setup.get(section) or {}
        missing = [key for key in keys if values.get(key) is None]
        if missing:
            raise StageError(f"{where}: {section}: missing required key{'s' * (len(missing) > 1)} {', '.join(missing)}")
    train = setup["train"]
    if method in MERGEABLE:
        missing = [k for k in ("r", "alpha", "dropout") if (train.get("lora") or {}).get(k) is None]
        if missing:
            raise StageError(f"{where}: train.lora: missing required keys {', '.join(missing)}")
    else:
        train.pop("lora", None)  # another method's defaults
    if method == "prompt_tuning":
        if (train.get("prompt_tuning") or {}).get("virtual_tokens") is None:
            raise StageError(f"{where}: train.prompt_tuning: missing required key virtual_tokens")
    else:
        train.pop("prompt_tuning", None)
    if train.get("keep_best") and not train.get("eval_steps"):
        raise StageError(f"{where}: train.keep_best: needs eval_steps set (it keeps the best evaluation)")
    dataset, data = data_spec(setup, name, root)
    model, base = model_spec(setup, name, root)
    if not data.get("format"):
        raise StageError(f"{where}: dataset '{dataset}' has no format")
    known = known_options(data["format"])
    unknown = sorted(set(data.get("options") or {}) - set(known)) if known is not None else []
    if unknown:
        raise StageError(f"{where}: dataset options: unknown {unknown} for format {data['format']} "
                         f"(known: {', '.join(sorted(known))})")
    setup.update(name=name, dataset=dataset, model=model, own_dataset=not isinstance(own["dataset"], str),
                 own_model=not isinstance(own["model"], str), format=data["format"], source=data.get("source"),
                 model_source=base.get("source"), data=data, base=base,
                 kind_rows=list(KINDS[kind].rows), generates=KINDS[kind].generates)
    return setup
