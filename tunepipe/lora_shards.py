"""Fold a LoRA adapter into its base one safetensors shard at a time, for bases larger than memory.

`merge_by_shard(base, adapter, out)` reads a shard of the base, adds each LoRA module's update to the
weight it adapts (W + (B @ A) * scaling, transposed for GPT-2's Conv1D layers, exactly as peft's
`merge_and_unload` computes it), writes the shard under the same name with the same tensor names, and frees
it before reading the next. Peak memory is about one shard plus the adapter, not the whole model, and the
result loads with `from_pretrained` and equals peft's whole-model merge tensor for tensor.

Only plain LoRA is folded this way; `unsupported(adapter)` says why another adapter (DoRA, per-module
ranks, trained biases, a new head saved beside it) needs the whole-model merge.
"""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
ADAPTER_PREFIX = "base_model.model."
COPIED = ("config.json", "generation_config.json")  # what from_pretrained needs besides the weights


# LoRA config keys whose non-default values change what a merge must do; any of them set -> whole-model merge
VARIANTS = {"use_dora": "DoRA rescales whole weight columns", "rank_pattern": "per-module ranks",
            "alpha_pattern": "per-module alphas", "modules_to_save": "whole modules saved beside the adapter",
            "layers_to_transform": "a layer subset", "layer_replication": "replicated layers",
            "lora_bias": "a bias on lora_B", "target_parameters": "LoRA on parameters, not modules",
            "trainable_token_indices": "trained token embeddings", "use_qalora": "QALoRA",
            "use_bdlora": "block-diagonal LoRA", "alora_invocation_tokens": "activated LoRA",
            "kasa_config": "KaSA", "velora_config": "VeLoRA", "arrow_config": "Arrow routing"}
PLAIN_KEY = re.compile(r"\.lora_([AB])\.weight$")


def unsupported(adapter: Path, base: Path | None = None, dtype: str | None = None) -> str | None:
    """Why this adapter cannot be folded shard by shard (into `base`, cast to `dtype`), or None when it can:
    only plain LoRA on weights the base's checkpoint holds, which is what peft merges by W + BA * scaling."""
    from safetensors import safe_open

    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("peft_type") != "LORA":
        return f"a {config.get('peft_type')} adapter has no low-rank update"
    for key, reason in VARIANTS.items():
        if config.get(key):
            return f"{reason} ({key})"
    if config.get("bias", "none") != "none":
        return f"trained biases (bias: {config['bias']})"
    with safe_open(adapter / "adapter_model.safetensors", "pt") as tensors:
        other = next((key for key in tensors.keys() if not PLAIN_KEY.search(key)), None)
    if other:  # LoRA on an embedding (lora_embedding_A), a saved module, ...
        return f"the adapter holds {other}, not only lora_A/lora_B weights"
    if base is None:
        return None
    names = set(tensor_files(base))
    for module in lora_modules(adapter):
        if weight_key(module, names) is None:  # e.g. a tied lm_head: its weight is the embedding's
            return f"{module} has no weight of its own in the base's checkpoint"
    if dtype and dtype != "float32":
        architecture = (json.loads((base / "config.json").read_text(encoding="utf-8")).get("architectures") or [""])[0]
        import transformers

        model_class = getattr(transformers, architecture, None)
        kept = getattr(model_class, "_keep_in_fp32_modules", None) or getattr(model_class, "_keep_in_fp32_modules_strict", None)
        if model_class is None or kept:
            return f"{architecture or 'this model'} keeps some modules in float32 when loaded in {dtype}"
    return None


def lora_modules(adapter: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(adapter / "adapter_model.safetensors", "pt") as tensors:
        return {PLAIN_KEY.sub("", key).removeprefix(ADAPTER_PREFIX) for key in tensors.keys() if PLAIN_KEY.search(key)}


def shard_files(base: Path) -> list[str]:
    """The base's weight files in order: those its index names, or its single model.safetensors."""
    if (base / INDEX).exists():
        weight_map = json.loads((base / INDEX).read_text(encoding="utf-8"))["weight_map"]
        return sorted(set(weight_map.values()))
    if (base / SINGLE).exists():
        return [SINGLE]
    raise FileNotFoundError(f"{base}: no {SINGLE} or {INDEX} (only safetensors weights are merged)")


def tensor_files(base: Path) -> dict[str, str]:
    """Each tensor name of the base's checkpoint -> the file that holds it (headers only are read)."""
    from safetensors import safe_open

    names: dict[str, str] = {}
    for name in shard_files(base):
        with safe_open(base / name, "pt") as shard:
            names.update(dict.fromkeys(shard.keys(), name))
    return names


def lora_updates(adapter: Path) -> dict[str, dict]:
    """Module path -> its A and B matrices (small: the whole adapter is held, never the base)."""
    from safetensors.torch import load_file

    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r  # peft's own formulas
    modules: dict[str, dict] = {}
    for key, tensor in load_file(adapter / "adapter_model.safetensors").items():  # plain keys: see unsupported
        modules.setdefault(PLAIN_KEY.sub("", key).removeprefix(ADAPTER_PREFIX), {})[PLAIN_KEY.search(key)[1]] = tensor
    for path, parts in modules.items():
        if set(parts) != {"A", "B"}:
            raise ValueError(f"{adapter}: module {path} has {sorted(parts)} of lora A and B")
        parts.update(scaling=scaling, transpose=bool(config.get("fan_in_fan_out")))
    return modules


def weight_key(module: str, names: set[str]) -> str | None:
    """The base tensor a module's update goes to: the same path, or without the model's prefix
    (checkpoints of some classes, such as GPT-2's, store `h.0...` for the module `transformer.h.0...`)."""
    for candidate in (module, module.partition(".")[2]):
        if f"{candidate}.weight" in names:
            return f"{candidate}.weight"
    return None


def merge_by_shard(base: Path, adapter: Path, out: Path, dtype: str | None = None) -> dict[str, int]:
    """Write base + adapter to `out` shard by shard; returns counts for the record."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    reason = unsupported(adapter, base, dtype)
    if reason:
        raise ValueError(f"{adapter}: cannot merge shard by shard: {reason}")
    files, names = shard_files(base), tensor_files(base)
    updates = lora_updates(adapter)
    targets: dict[str, dict] = {}  # file -> weight name -> its update (unsupported() checked every module has one)
    for module, update in updates.items():
        key = weight_key(module, set(names))
        targets.setdefault(names[key], {})[key] = update

    out.mkdir(parents=True, exist_ok=True)
    cast = getattr(torch, dtype) if dtype else None
    total_bytes = 0
    for name in files:
        with safe_open(base / name, "pt") as shard:
            metadata = shard.metadata() or {}
            tensors = {key: shard.get_tensor(key) for key in shard.keys()}
        if cast is not None:  # as the whole-model merge loads the base: in `dtype`, then merges
            tensors = {key: t.to(cast) if t.is_floating_point() else t for key, t in tensors.items()}
        for key, lora in targets.get(name, {}).items():
            # peft's own arithmetic (float32 update, added in place to the weight in its dtype), so the
            # bytes match its merge_and_unload
            delta = lora["B"].float() @ lora["A"].float()
            delta = delta.T if lora["transpose"] else delta
            if delta.shape != tensors[key].shape:
                raise ValueError(f"{adapter}: the update of {key} is {tuple(delta.shape)}, the weight "
                                 f"{tuple(tensors[key].shape)} (fan_in_fan_out set wrongly?)")
            tensors[key].add_(delta * lora["scaling"])
        save_file(tensors, out / name, metadata={**metadata, "format": "pt"})
        total_bytes += sum(t.numel() * t.element_size() for t in tensors.values())
        del tensors  # the next shard reuses the memory
    if (base / INDEX).exists():
        index = json.loads((base / INDEX).read_text(encoding="utf-8"))
        index["metadata"] = {**index.get("metadata", {}), "total_size": total_bytes}  # changes with dtype
        (out / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for name in COPIED:
        if (base / name).exists():
            shutil.copyfile(base / name, out / name)
    if cast is not None:
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
        config.pop("torch_dtype", None)  # the older name would contradict the new one
        config["dtype"] = dtype
        (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {"shards": len(files), "modules": len(updates)}
