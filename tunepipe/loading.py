"""Building, saving and reloading a model of a kind (tunepipe/kinds.py) trained by a method.

Saved weights, always safetensors: lora / qlora / prompt_tuning -> a peft adapter (a head's new classifier is
saved with it through modules_to_save); full -> the whole model. `recipe.json` beside them records kind,
method, label order and 4-bit settings, so `load_trained` rebuilds the model from the folder alone.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunepipe.devices import placement, qlora_compute_dtype
from tunepipe.errors import StageError
from tunepipe.files import write_json
from tunepipe.kinds import ADAPTER_METHODS, KINDS, MERGEABLE

RECIPE = "recipe.json"


def quantization_config(qlora: dict[str, Any]):
    """4-bit nf4 with double quantization, as QLoRA does; compute dtype from params."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=qlora["quant_type"],
                              bnb_4bit_use_double_quant=bool(qlora["double_quant"]),
                              bnb_4bit_compute_dtype=getattr(torch, qlora_compute_dtype(qlora["compute_dtype"])))


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


def attach_method(model, kind: str, method: str, params: dict[str, Any], base: Path):
    """Wrap the base model for training by `method`; returns the model whose trainable weights get saved."""
    from peft import LoraConfig, PromptTuningConfig, get_peft_model, prepare_model_for_kbit_training

    task = KINDS[kind].peft_task
    if method == "full":
        return model
    if method in MERGEABLE:
        lora = params["lora"]
        if method == "qlora":  # norms in fp32; gradient checkpointing is the Trainer's to switch on, once
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
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
