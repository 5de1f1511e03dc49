"""Folding a LoRA or QLoRA adapter into its base, checked, with a model card that says what made the result.

A QLoRA adapter is folded into its base de-quantized to float, never into 4-bit weights. The merge checks
itself: on fixed inputs the merged model's logits must equal the adapter model's within `tolerance` (`auto`:
1e-3 for float32, 5e-2 for bfloat16 and float16). A plain LoRA adapter can be folded one safetensors
shard of the base at a time (tunepipe/lora_shards.py).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from tunepipe.errors import StageError
from tunepipe.devices import inference_dtype
from tunepipe.kinds import MERGEABLE
from tunepipe.lora_shards import merge_by_shard, unsupported
from tunepipe.settings.train import on_card

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
    shown = on_card(setup["train"])  # the settings that made the model (tunepipe/settings/train.py)
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


def check_mergeable(setup: dict[str, Any], params: dict[str, Any], where: str) -> str:
    """The dtype to merge in, once the method and dtype are known to fit."""
    if setup["method"] not in MERGEABLE:
        raise StageError(f"{where}: method '{setup['method']}' has no low-rank update to merge "
                         f"(merge applies to {', '.join(MERGEABLE)}); remove merge from the file")
    # auto: half precision on a GPU (a 7B model merges in half the memory of float32), float32 on a CPU
    dtype = inference_dtype(params.get("dtype"), setup["kind"], setup["method"])
    if dtype not in DTYPES:
        raise StageError(f"{where}.dtype: one of {', '.join(DTYPES)}, not {dtype!r}")
    if setup["method"] == "qlora" and dtype != "float32":  # its base de-quantizes to its compute dtype
        raise StageError(f"{where}.dtype: a QLoRA merge de-quantizes to the experiment's qlora.compute_dtype; "
                         f"leave dtype out")
    return dtype


def expected_logits(adapter_model, tokenizer, trained: Path):
    """The adapter model's logits on CHECK_TEXTS: what the merged model must reproduce."""
    expected = logits(adapter_model, tokenizer, CHECK_TEXTS)
    if not bool(expected.isfinite().all()):  # a merge of such weights would pass the check NaN for NaN
        raise StageError(f"{trained / 'adapter_model.safetensors'}: the adapter model's logits are not finite "
                         "(NaN or inf in the adapter's weights: a damaged file or a diverged run)")
    return expected


def merge_shards(base: Path, trained: Path, out: Path, dtype: str, kind: str):
    """The adapter folded into the base's safetensors shard by shard, reloaded for the check."""
    from tunepipe.loading import load_base

    merge_by_shard(base, trained, out, dtype)
    return load_base(kind, out, dtype=dtype).eval()


def tolerance_for(setting: float | str, dtype: str) -> float:
    """The merge check's tolerance: as set, or (`auto`) what the dtype's rounding alone moves logits by."""
    return (1e-3 if dtype == "float32" else 5e-2) if setting == "auto" else float(setting)


def check_merged(merged, tokenizer, expected, tolerance: float | str, by_shard: bool, trained: Path) -> dict[str, Any]:
    """merge_check.json: how far the merged model's logits are from the adapter model's; a failure stops."""
    difference = float((logits(merged, tokenizer, CHECK_TEXTS) - expected).abs().max())
    written = str(next(merged.parameters()).dtype).removeprefix("torch.")  # QLoRA's is its compute dtype
    tolerance = tolerance_for(tolerance, written)
    check = {"max_abs_logit_difference": difference, "tolerance": float(tolerance), "dtype": written,
             "inputs": len(CHECK_TEXTS), "by_shard": by_shard, "passed": difference <= float(tolerance)}
    if not check["passed"]:
        raise StageError(f"merge of {trained} changed the model: logits differ by up to {difference:.3g} "
                         f"from the adapter's (tolerance {tolerance} in {written})")
    return check
