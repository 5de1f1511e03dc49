"""Model kind × training method, decided in one place: which pairs exist and what each one is.

A kind says what the model is and what rows it reads; a method says which weights train and what is saved:

| kind          | loads with                          | reads rows                      | predicts by | methods                          |
|---------------|-------------------------------------|---------------------------------|-------------|----------------------------------|
| causal_lm     | AutoModelForCausalLM                | instruction, chat, text, or rendered | generation | lora, qlora, prompt_tuning, full |
| seq2seq       | AutoModelForSeq2SeqLM               | instruction (or rendered)       | generation  | lora, qlora, prompt_tuning, full |
| token_head    | AutoModelForTokenClassification     | tokens (IOB2 tags)              | its head    | lora, full                       |
| sequence_head | AutoModelForSequenceClassification  | labelled (text, optional pair)  | its head    | lora, prompt_tuning, full        |

Saved weights, always safetensors: lora / qlora / prompt_tuning -> a peft adapter (a head's new classifier is
saved with it through modules_to_save); full -> the whole model. `recipe.json` beside them records kind,
method, label order and 4-bit settings, so tunepipe/loading.py rebuilds the model from the folder alone.
Nothing heavy is imported at module level, so checking an experiment against these tables takes no time.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass

from tunepipe.errors import StageError


@dataclass(frozen=True)
class Kind:
    auto_class: str
    peft_task: str
    rows: tuple[str, ...]  # converted row kinds it reads; "labelled" for an LLM goes through a prompt template
    generates: bool
    methods: tuple[str, ...]

KINDS = {
    "causal_lm": Kind("AutoModelForCausalLM", "CAUSAL_LM", ("instruction", "labelled", "chat", "text"), True,
                      ("lora", "qlora", "prompt_tuning", "full")),
    "seq2seq": Kind("AutoModelForSeq2SeqLM", "SEQ_2_SEQ_LM", ("instruction", "labelled"), True,
                    ("lora", "qlora", "prompt_tuning", "full")),
    "token_head": Kind("AutoModelForTokenClassification", "TOKEN_CLS", ("tokens",), False, ("lora", "full")),
    "sequence_head": Kind("AutoModelForSequenceClassification", "SEQ_CLS", ("labelled",), False,
                          ("lora", "prompt_tuning", "full")),
}

METHODS = ("lora", "qlora", "prompt_tuning", "full")

ADAPTER_METHODS = ("lora", "qlora", "prompt_tuning")

MERGEABLE = ("lora", "qlora")

METRICS = ("rouge_any", "ner_seqeval", "label_match", "refusal", "perplexity")

BITSANDBYTES_CPU_4BIT = (0, 48)  # the first releases that load nf4 weights on a CPU as well as on CUDA


def check_bitsandbytes(where: str) -> None:
    """QLoRA needs bitsandbytes able to load 4-bit weights here: say so now, not after minutes of setup."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise StageError(f"{where}: qlora needs bitsandbytes, which is not installed (pip install bitsandbytes)")
    version = importlib.metadata.version("bitsandbytes")
    numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if numbers < BITSANDBYTES_CPU_4BIT:
        raise StageError(f"{where}: qlora needs bitsandbytes >= {'.'.join(map(str, BITSANDBYTES_CPU_4BIT))} "
                         f"to load 4-bit weights on this machine; {version} is installed")
