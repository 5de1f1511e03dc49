"""merge: fold a LoRA or QLoRA adapter into its base model -> models/merged/<experiment>/ (safetensors).

A merged model serves like any plain model (no peft at inference, no adapter overhead per layer), and is
what a user ships. A QLoRA adapter is folded into its base de-quantized to float, never into 4-bit
weights. The merge checks itself: on fixed inputs the merged model's logits must equal the adapter
model's within `tolerance` (state it for the merge `dtype`: float32 1e-3, bfloat16 about 5e-2), or the
stage fails saying by how much they differ; the result is saved as merge_check.json beside the weights.

`by_shard` (default `auto`): a plain LoRA adapter is folded one safetensors shard of the base at a time
(stages/lora_shards.py), so a base larger than memory merges in about one shard's memory; the check then
holds one model at a time. Other adapters (QLoRA, a head saved beside the adapter) merge as a whole model.
The output carries the base's tokenizer, chat template and generation config, and a model card (README.md)
naming the base, adapter, data and params that made it. Exists only for experiments whose file says
`merge: true` (or gives merge settings).
"""
from __future__ import annotations

import gc
import hashlib
from pathlib import Path
from typing import Any

import yaml

from stages.common import (
    StageError,
    atomic_dir,
    one_item,
    pin_threads,
    run_stage,
    write_json,
)
from stages.settings import load_experiment, where as setting
from stages.lora_shards import merge_by_shard, unsupported
from stages.modeling import MERGEABLE, load_base, load_trained, read_recipe

DTYPES = ("float32", "bfloat16", "float16")
CHECK_TEXTS = ["The quick brown fox jumps over the lazy dog.", "长江是中国最长的河流。", "Summarize: #Person1#: Hi."]


def logits(model, tokenizer, texts: list[str]):
    """Logits of each text alone (no padding, so the tokenizer needs no pad token), concatenated."""
    import torch

    outputs = []
    for text in texts:
        inputs = tokenizer(text, return_tensors="pt", return_token_type_ids=False).to(model.device)
        extra = {}
        if getattr(model.config, "is_encoder_decoder", False):
            extra["decoder_input_ids"] = torch.tensor([[model.config.decoder_start_token_id]], device=model.device)
        with torch.no_grad():
            outputs.append(model(**inputs, **extra).logits.float().flatten())
    return torch.cat(outputs)


def choose_by_shard(setting: Any, method: str, trained: Path, base: Path, dtype: str, where: str) -> bool:
    reason = "QLoRA's base is de-quantized as a whole model" if method == "qlora" else unsupported(trained, base, dtype)
    if setting in ("auto", None):
        return reason is None
    if setting is True and reason:
        raise StageError(f"{where}.by_shard: cannot merge {trained} shard by shard: {reason}; use auto or false")
    if setting not in (True, False):
        raise StageError(f"{where}.by_shard: auto, true or false, not {setting!r}")
    return setting


def model_card(experiment: str, setup: dict, recipe: dict, check: dict, by_shard: bool, trained: Path) -> str:
    """What made this model, for whoever receives it: names and hashes only (no paths, no credentials)."""
    train = setup["train"]
    shown = {k: v for k, v in train.items() if k not in ("threads", "memory_limit_gb", "accelerate_config")}
    adapter = hashlib.sha256((trained / "adapter_model.safetensors").read_bytes()).hexdigest()
    lines = [f"# {experiment} (merged)", "",
             f"- base: `{setup['model']}` (this pipeline's models/base/{setup['model']}; its source and pin are "
             f"params.yaml models.{setup['model']})",
             f"- adapter: {setup['method']} on a {setup['kind']} model, adapter_model.safetensors sha256 `{adapter}`",
             f"- data: `{setup['dataset']}`, train and validation splits sha256 `{recipe.get('data_sha256', 'unknown')}`",
             f"- merge: {'shard by shard' if by_shard else 'whole model'} in {check['dtype']}; logits on "
             f"{check['inputs']} fixed inputs within {check['max_abs_logit_difference']:.3g} of the adapter "
             f"model's (tolerance {check['tolerance']})", "", "## Training params", "", "```yaml",
             yaml.safe_dump(shown, sort_keys=True, allow_unicode=True).strip(), "```", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    experiment = one_item(argv, "merge")
    setup = load_experiment(experiment, "merge")
    params = setup["merge"]
    where = setting(experiment, "merge")
    if setup["method"] not in MERGEABLE:
        raise StageError(f"{where}: method '{setup['method']}' has no low-rank update to merge "
                         f"(merge applies to {', '.join(MERGEABLE)}); remove merge from the file")
    base = Path("models/base") / setup["model"]
    trained = Path("models/trained") / experiment
    recipe = read_recipe(trained)
    dtype = params.get("dtype", "float32")  # a 7B model merges in float16 in half the memory of float32
    if dtype not in DTYPES:
        raise StageError(f"{where}.dtype: one of {', '.join(DTYPES)}, not {dtype!r}")
    if setup["method"] == "qlora" and dtype != "float32":  # its base de-quantizes to its compute dtype
        raise StageError(f"{where}.dtype: a QLoRA merge de-quantizes to the experiment's qlora.compute_dtype; "
                         f"leave dtype out")
    by_shard = choose_by_shard(params.get("by_shard", "auto"), setup["method"], trained, base, dtype, where)

    from transformers import AutoTokenizer

    pin_threads(params.get("threads", 2))
    tokenizer = AutoTokenizer.from_pretrained(base)
    adapter_model = load_trained(base, trained, dequantize=True, dtype=dtype)
    expected = logits(adapter_model, tokenizer, CHECK_TEXTS)
    if not bool(expected.isfinite().all()):  # a merge of such weights would pass the check NaN for NaN
        raise StageError(f"{trained / 'adapter_model.safetensors'}: the adapter model's logits are not finite "
                         "(NaN or inf in the adapter's weights: a damaged file or a diverged run)")
    with atomic_dir(Path("models/merged") / experiment) as out:
        if by_shard:  # the adapter model goes before the merge, so one model is held at a time
            del adapter_model
            gc.collect()
            merge_by_shard(base, trained, out, dtype)
            merged = load_base(recipe["kind"], out, dtype=dtype).eval()
        else:
            merged = adapter_model.merge_and_unload()
            merged.save_pretrained(out, safe_serialization=True)
        difference = float((logits(merged, tokenizer, CHECK_TEXTS) - expected).abs().max())
        written = str(next(merged.parameters()).dtype).removeprefix("torch.")  # QLoRA's is its compute dtype
        check = {"max_abs_logit_difference": difference, "tolerance": float(params["tolerance"]), "dtype": written,
                 "inputs": len(CHECK_TEXTS), "by_shard": by_shard, "passed": difference <= float(params["tolerance"])}
        if not check["passed"]:
            raise StageError(f"merge of {trained} changed the model: logits differ by up to {difference:.3g} "
                             f"from the adapter's (tolerance {params['tolerance']} in {written})")
        tokenizer.save_pretrained(out)  # with the chat template; the generation config came with the weights
        write_json(out / "merge_check.json", check)
        (out / "README.md").write_text(model_card(experiment, setup, recipe, check, by_shard, trained),
                                       encoding="utf-8")
    print(f"[merge] {trained} + {base} -> models/merged/{experiment} "
          f"({'by shard' if by_shard else 'whole'}, logits within {difference:.2g})")


if __name__ == "__main__":
    run_stage(main)
