"""Model kind × training method, decided in one place: which pairs exist, how to build, save and reload each.

A kind says what the model is and what rows it reads; a method says which weights train and what is saved:

| kind          | loads with                          | reads rows                      | predicts by | methods                          |
|---------------|-------------------------------------|---------------------------------|-------------|----------------------------------|
| causal_lm     | AutoModelForCausalLM                | instruction, chat, text, or rendered | generation | lora, qlora, prompt_tuning, full |
| seq2seq       | AutoModelForSeq2SeqLM               | instruction (or rendered)       | generation  | lora, qlora, prompt_tuning, full |
| token_head    | AutoModelForTokenClassification     | tokens (IOB2 tags)              | its head    | lora, full                       |
| sequence_head | AutoModelForSequenceClassification  | labelled (text, optional pair)  | its head    | lora, prompt_tuning, full        |

Saved weights, always safetensors: lora / qlora / prompt_tuning -> a peft adapter (a head's new classifier is
saved with it through modules_to_save); full -> the whole model. `recipe.json` beside them records kind,
method, label order and 4-bit settings, so `load_trained` rebuilds the model from the folder alone.
Nothing heavy is imported at module level, so checking an experiment against these tables takes no time.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common import StageError, write_json


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
RECIPE = "recipe.json"


# --- params: the experiment files are checked against these tables (stages/schema.py) ----------------------

def check_bitsandbytes(where: str) -> None:
    """QLoRA needs bitsandbytes able to load 4-bit weights here: say so now, not after minutes of setup."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise StageError(f"{where}: qlora needs bitsandbytes, which is not installed (pip install bitsandbytes)")
    version = importlib.metadata.version("bitsandbytes")
    numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if numbers < BITSANDBYTES_CPU_4BIT:
        raise StageError(f"{where}: qlora needs bitsandbytes >= {'.'.join(map(str, BITSANDBYTES_CPU_4BIT))} "
                         f"to load 4-bit weights on this machine; {version} is installed")


# --- building -----------------------------------------------------------------------------------------------

def quantization_config(qlora: dict[str, Any]):
    """4-bit nf4 with double quantization, as QLoRA does; compute dtype from params."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=qlora["quant_type"],
                              bnb_4bit_use_double_quant=bool(qlora["double_quant"]),
                              bnb_4bit_compute_dtype=getattr(torch, qlora["compute_dtype"]))


def load_base(kind: str, folder: Path, labels: list[str] | None = None, qlora: dict[str, Any] | None = None,
              dtype: str = "float32"):
    """The pretrained model as `kind`; a head gets new, seeded weights sized to `labels`."""
    import torch
    import transformers

    auto = getattr(transformers, KINDS[kind].auto_class)
    options: dict[str, Any] = {"use_safetensors": True}  # never unpickle weights: that can run code
    if qlora is not None:
        options.update(quantization_config=quantization_config(qlora), device_map={"": placement()})
    else:
        options["dtype"] = getattr(torch, dtype)
    if labels is not None:
        options.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                       label2id={label: i for i, label in enumerate(labels)})
    try:
        model = auto.from_pretrained(folder, **options)
    except (ImportError, RuntimeError) as err:  # bitsandbytes present but unable to quantize here
        if qlora is None:
            raise
        raise StageError(f"cannot load {folder} in 4-bit: {str(err).splitlines()[0][:200]}") from None
    if labels is not None and model.config.pad_token_id is None:
        # heads on decoder-only models (GPT-2) find each row's last token through the pad id
        model.config.pad_token_id = load_tokenizer(folder).pad_token_id
    return model


def load_tokenizer(folder: Path):
    """The model's tokenizer; one with no pad token (GPT-2, GPT-Neo, phi-2) pads with its end-of-sequence
    token, which the attention mask hides and the labels ignore (-100), so it never counts."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def local_gpu() -> int:
    """This process's GPU: its rank on this machine under accelerate/torchrun, else the first visible one."""
    import os

    return int(os.environ.get("LOCAL_RANK", 0))


def placement() -> str | int:
    """Where a 4-bit model loads (it cannot move afterwards): this process's own GPU when several train."""
    return local_gpu() if device() == "cuda" else "cpu"


BF16_ON_CPU = {"causal_lm": ("lora", "prompt_tuning"), "seq2seq": ("lora", "prompt_tuning")}


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX-512 BF16 or AMX): where it has not, bf16 is converted
    in software and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolved_precision(requested: str | None, kind: str | None = None, method: str | None = None) -> str:
    """`auto`: bf16 on a GPU that computes in it natively (compute capability 8.0, Ampere, and later), fp16 on
    an older one (torch.cuda.is_bf16_supported() alone also says yes where bf16 is only emulated, a V100 or
    T4, which trains several times slower than fp16 there). On a CPU with bf16 instructions, bf16 for a
    language model's adapter (its frozen base stored in bf16: 1.7x the tokens/s of fp32 for SmolLM2 LoRA here,
    validation curves within 0.01 of fp32's; bench/ and the README have the figures); fp32 otherwise."""
    import torch

    if requested not in (None, "auto"):
        return requested
    if not torch.cuda.is_available():
        return "bf16" if method in BF16_ON_CPU.get(kind, ()) and cpu_computes_bf16() else "fp32"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def device_description() -> str:
    """What this process computes on, as the recipe and the checkpoints record it."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    index = local_gpu()
    major, minor = torch.cuda.get_device_capability(index)
    return f"cuda:{index} {torch.cuda.get_device_name(index)} (compute capability {major}.{minor})"


def one_process_one_gpu(processes: int) -> None:
    """With `processes: 1` on a machine with several GPUs, show this process only the first: the Trainer
    would otherwise wrap the model in DataParallel over all of them (another batch size, other results)
    without being asked. Runs before CUDA starts (device_count reads NVML and starts nothing)."""
    import os

    import torch

    if processes != 1 or os.environ.get("LOCAL_RANK") is not None or torch.cuda.device_count() <= 1:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = visible.split(",")[0] if visible else "0"


def attach_method(model, kind: str, method: str, params: dict[str, Any], base: Path):
    """Wrap the base model for training by `method`; returns the model whose trainable weights get saved."""
    from peft import LoraConfig, PromptTuningConfig, get_peft_model, prepare_model_for_kbit_training

    task = KINDS[kind].peft_task
    if method == "full":
        return model
    if method in MERGEABLE:
        lora = params["lora"]
        if method == "qlora":  # norms in fp32, inputs that carry gradients, gradient checkpointing
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        alpha = float(lora["alpha"])
        targets = lora.get("target_modules")  # None: peft's choice for the architecture (q and v projections)
        config = LoraConfig(r=int(lora["r"]), lora_alpha=int(alpha) if alpha.is_integer() else alpha,
                            lora_dropout=float(lora["dropout"]),
                            target_modules=list(targets) if isinstance(targets, list) else targets,
                            bias=lora.get("bias") or "none", modules_to_save=lora.get("modules_to_save"),
                            use_rslora=bool(lora.get("use_rslora")), use_dora=bool(lora.get("use_dora")), task_type=task)
    else:  # prompt_tuning: virtual tokens, from a text (as the seeds did) or at random
        prompt = params["prompt_tuning"]
        text = prompt.get("init_text")
        config = PromptTuningConfig(task_type=task, num_virtual_tokens=int(prompt["virtual_tokens"]),
                                    prompt_tuning_init="TEXT" if text else "RANDOM", prompt_tuning_init_text=text,
                                    tokenizer_name_or_path=str(base) if text else None)
    return get_peft_model(model, config)


def save_trained(model, out: Path, kind: str, method: str, labels: list[str] | None,
                 qlora: dict[str, Any] | None, state_dict: dict | None = None, data_sha256: str | None = None,
                 run: dict[str, str] | None = None) -> None:
    """`state_dict`: the weights gathered from every process (FSDP and DeepSpeed shard them);
    `data_sha256`: the train and validation splits trained on, for the merged model's card; `run`: the
    precision and device it trained in, as resolved."""
    model.save_pretrained(out, safe_serialization=True, state_dict=state_dict)
    (out / "README.md").unlink(missing_ok=True)  # peft's generated card: boilerplate, not our record
    if method in ADAPTER_METHODS:
        canonical_adapter_config(out / "adapter_config.json")
    write_json(out / RECIPE, {"kind": kind, "method": method, "labels": labels, "qlora": qlora,
                              "data_sha256": data_sha256, **(run or {})})


def canonical_adapter_config(path: Path) -> None:
    """peft writes target_modules and modules_to_save from sets, in an order that follows Python's
    per-process hash seed; sorted, the same training gives the same bytes (and the same DVC hash)."""
    config = json.loads(path.read_text(encoding="utf-8"))
    for key in ("target_modules", "modules_to_save"):
        if isinstance(config.get(key), list):
            config[key] = sorted(set(config[key]))
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# --- reloading ----------------------------------------------------------------------------------------------

def load_trained(base: Path, trained: Path, dequantize: bool = False, dtype: str = "float32"):
    """The trained model from its folder, for prediction or merging (eval mode).

    A QLoRA adapter reloads on the same 4-bit base it trained on; with `dequantize`, on that base
    de-quantized to float (what a merge folds into: never into 4-bit weights).
    """
    from peft import PeftModel

    recipe = json.loads((trained / RECIPE).read_text(encoding="utf-8"))
    kind, method, labels, qlora = recipe["kind"], recipe["method"], recipe["labels"], recipe["qlora"]
    if method == "full":
        return load_base(kind, trained, dtype=dtype).eval()
    model = load_base(kind, base, labels=labels, qlora=qlora, dtype=dtype)
    if qlora is not None and dequantize:
        model = model.dequantize()
    return PeftModel.from_pretrained(model, trained).eval()


def read_recipe(trained: Path) -> dict[str, Any]:
    path = trained / RECIPE
    if not path.exists():
        raise StageError(f"{path}: not found (run dvc repro train@{trained.name})")
    return json.loads(path.read_text(encoding="utf-8"))


# --- lengths ------------------------------------------------------------------------------------------------

def model_context(folder: Path, tokenizer) -> int:
    """How many positions the model takes: its position table, else the tokenizer's limit (T5's relative
    positions have no table; its tokenizer says 512)."""
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    limit = tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else None
    return min(filter(None, (positions, limit)), default=512)


def cut_middle(ids: list[int], limit: int) -> list[int]:
    """A prompt longer than `limit` keeps its first and last halves of it: the instruction opens a prompt,
    the question and the assistant turn close it; the middle of the input is what can go."""
    return ids if len(ids) <= limit else ids[:limit // 2] + ids[len(ids) - (limit - limit // 2):]


# --- batches ------------------------------------------------------------------------------------------------

def collator_for(kind: str, tokenizer, model=None):
    """Pads each batch to its own longest row (labels with -100) and counts real vs padded tokens."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorForTokenClassification, DataCollatorWithPadding

    base = {"causal_lm": DataCollatorForSeq2Seq, "seq2seq": DataCollatorForSeq2Seq,
            "token_head": DataCollatorForTokenClassification, "sequence_head": DataCollatorWithPadding}[kind]
    options: dict[str, Any] = {"padding": "longest"}
    if base is not DataCollatorWithPadding:
        options["label_pad_token_id"] = -100
    if kind == "seq2seq":
        options["model"] = model  # builds decoder_input_ids from the labels

    class CountingCollator(base):
        real_tokens = 0  # instance counts once a batch is counted (the class values are the start)
        padded_tokens = 0

        def __call__(self, features, *args, **kwargs):
            batch = super().__call__(features, *args, **kwargs)
            mask = batch["attention_mask"]
            self.real_tokens += int(mask.sum())
            self.padded_tokens += int(mask.numel() - mask.sum())
            return batch

    return CountingCollator(tokenizer, **options)
