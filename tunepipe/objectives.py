"""Training objective × model kind × method, decided in one place, beside the kind × method table (kinds.py).

| objective | trained by (TRL)     | reads rows    | kinds     | methods            | its own settings        |
|-----------|----------------------|---------------|-----------|--------------------|-------------------------|
| sft       | transformers Trainer | the kind's    | all       | the kind's         | -                       |
| dpo       | DPOTrainer/DPOConfig | preference    | causal_lm | lora, qlora, full  | train.dpo: beta, loss_type, ... |
| kto       | KTOTrainer/KTOConfig | unpaired (a pair: two rows) | causal_lm | lora, qlora, full | train.kto: beta, desirable_weight, ... |
| grpo      | GRPOTrainer/GRPOConfig | the kind's prompts (instruction, chat, labelled) | causal_lm | lora, qlora, full | train.grpo: num_generations, max_completion_length, ... |

A preference or reward objective is TRL's own trainer and config: no loss is written here. `train.<objective>` passes
the listed fields of its TRL config class as they are (tests/test_objectives.py checks each name is one of
that class's fields); the rest of the arguments come from the train settings like any run's.
`init_from: <experiment>` starts from another experiment's trained model, which is then also the reference
the objective measures the policy against (TRL's frozen copy of the starting adapter, or of the whole model).
Nothing heavy is imported here, so checking an experiment against the table takes no time.
"""
from __future__ import annotations

from dataclasses import dataclass

from tunepipe.errors import StageError


@dataclass(frozen=True)
class Objective:
    trainer: str  # the TRL class names, imported when a stage trains
    config: str
    rows: tuple[str, ...]  # the converted row kinds it reads (formats/__init__.py)
    sequences: int  # sequences a row puts through the model with gradients (a pair: its two answers)
    sampling: str  # train.sampling where an experiment sets none (rows of a pair or a KL batch have no one length)
    kinds: tuple[str, ...]
    methods: tuple[str, ...]
    settings: tuple[str, ...]  # the fields of `config` an experiment may set under train.<objective>


OBJECTIVES = {
    "dpo": Objective("DPOTrainer", "DPOConfig", ("preference",), 2, "random", ("causal_lm",), ("lora", "qlora", "full"),
                     ("beta", "loss_type", "loss_weights", "label_smoothing", "f_divergence_type",
                      "f_alpha_divergence_coef", "discopop_tau", "ld_alpha", "use_weighting",
                      "precompute_ref_log_probs", "sync_ref_model", "ref_model_mixup_alpha", "ref_model_sync_steps")),
    # KTO reads one answer at a time, marked desirable or not (a preference pair is two such rows); its KL
    # estimate pairs each row with its neighbour's answer, so TRL needs the rows in their order
    "kto": Objective("KTOTrainer", "KTOConfig", ("unpaired", "preference"), 1, "sequential", ("causal_lm",), ("lora", "qlora", "full"),
                     ("beta", "loss_type", "desirable_weight", "undesirable_weight", "precompute_ref_log_probs",
                      "sync_ref_model", "ref_model_mixup_alpha", "ref_model_sync_steps")),
    # GRPO samples completions of the task's own prompts and rewards them with the task's metric (rewards.py)
    "grpo": Objective("GRPOTrainer", "GRPOConfig", ("instruction", "chat", "labelled"), 1, "random", ("causal_lm",),
                      ("lora", "qlora", "full"),
                      ("num_generations", "max_completion_length", "beta", "temperature", "top_p", "top_k",
                       "repetition_penalty", "loss_type", "epsilon", "epsilon_high", "num_iterations", "scale_rewards",
                       "reward_weights", "mask_truncated_completions", "steps_per_generation", "num_generations_eval")),
}

NAMES = ("sft", *OBJECTIVES)


def check_objective(setup: dict, where: str) -> None:
    """The objective fits the kind and method, its settings are its TRL config's, and another objective's
    section is not set: a pair that does not fit fails before anything loads."""
    name, train = setup.get("objective") or "sft", setup["train"]
    for other in OBJECTIVES:
        if other != name and train.get(other) is not None:
            raise StageError(f"{where}: train.{other}: settings of the {other} objective, but objective is {name!r}")
    if name == "sft":
        if setup.get("init_from"):
            raise StageError(f"{where}: init_from: supported for a preference or reward objective ({', '.join(OBJECTIVES)}); "
                             "an sft experiment starts from its base model")
        return
    objective = OBJECTIVES[name]
    if setup["kind"] not in objective.kinds or setup["method"] not in objective.methods:
        raise StageError(f"{where}: objective: {name!r} trains a {' or '.join(objective.kinds)} with "
                         f"{', '.join(objective.methods)}, not a {setup['kind']} with {setup['method']}")
    if name == "grpo":
        from tunepipe.rewards import check_rewarded

        check_rewarded(setup["metric"], where)
    unknown = sorted(set(train.get(name) or {}) - set(objective.settings))
    if unknown:
        raise StageError(f"{where}: train.{name}: unknown {', '.join(unknown)} (known: "
                         f"{', '.join(objective.settings)}; the rest come from the train settings)")


def check_init_from(setup: dict, start: dict, where: str) -> None:
    """`init_from` names an experiment whose trained model this one can start from: the same base model,
    kind, method and 4-bit settings (its adapter, or its whole weights, are what training continues: this
    experiment's own train.lora is not used)."""
    name = setup["init_from"]
    for key in ("model", "kind", "method", "qlora"):
        if start.get(key) != setup.get(key):
            raise StageError(f"{where}: init_from: '{name}' trains {key} {start.get(key)!r}, this experiment "
                             f"{setup.get(key)!r}: training continues its weights, so they must agree")
    if start.get("init_from") == setup["name"]:
        raise StageError(f"{where}: init_from: '{name}' starts from this experiment in turn (a cycle)")
