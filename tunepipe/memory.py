"""How much memory a training run needs, estimated before it starts, and how much the device has.

An out-of-memory crash an hour into a run costs the hour; this estimate costs a second. It counts:
- weights: the loaded model's parameters and buffers as they sit in memory (4-bit weights count as packed);
- gradients: one per trainable parameter, in its dtype;
- optimizer state: AdamW keeps two moments per trainable parameter (4 bytes each; 1 byte each for the
  8-bit paged optimizer);
- activations: per layer, the s·b·h·(34 + 5·a·s/h) bytes of Korthikanti et al. (2022, "Reducing Activation
  Recomputation in Large Transformer Models") for 16-bit activations, doubled for 32-bit; the 5·a·s/h part
  is the attention scores, which fused attention (PyTorch's SDPA, flash attention: transformers' default)
  recomputes instead of keeping, so it counts only for eager attention. With gradient checkpointing only each
  layer's input (2·s·b·h) is kept plus one layer's full set. The output logits, their softmax and gradient
  add 3·s·b·vocab values. tests/test_training.py checks the activation term against a measured peak.
It is an estimate of the peak, not a measurement: allocator slack and framework buffers come on top, so the
stop triggers at `headroom` (90%) of the free memory.
"""
from __future__ import annotations

from typing import Any

GIB = 1024 ** 3


def _config_value(config, *names: str, default: int = 0) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def estimate(model, batch_size: int, seq_len: int, optimizer: str, checkpointing: bool,
             outputs: int | None = None, half_precision: bool = False) -> dict[str, float]:
    """Bytes of each part of a training step's peak, for this model, batch and longest row.

    `outputs`: the width of the output layer per position (the vocabulary of a language model, the number
    of labels of a token head; a sequence head has one output row per example, not per position).
    """
    config = model.config
    hidden = _config_value(config, "hidden_size", "d_model", "n_embd")
    heads = _config_value(config, "num_attention_heads", "num_heads", "n_head", default=1)
    layers = _config_value(config, "num_hidden_layers", "num_layers", "n_layer") + _config_value(
        config, "num_decoder_layers")
    vocab = outputs if outputs is not None else _config_value(config, "vocab_size")
    activation_bytes = 2 if half_precision else 4
    trainable = [p for p in model.parameters() if p.requires_grad]
    tokens = batch_size * seq_len
    scores = 5 * heads * seq_len / max(hidden, 1) if getattr(config, "_attn_implementation", "eager") == "eager" else 0
    per_layer = tokens * hidden * (34 + scores) * activation_bytes / 2
    kept = layers * 2 * tokens * hidden + per_layer if checkpointing else layers * per_layer
    return {
        "weights": sum(p.numel() * p.element_size() for p in model.parameters())
        + sum(b.numel() * b.element_size() for b in model.buffers()),
        "gradients": sum(p.numel() * p.element_size() for p in trainable),
        "optimizer": sum(p.numel() for p in trainable) * 2 * (1 if "8bit" in optimizer else 4),
        "activations": kept + 3 * tokens * vocab * 4,
    }


def free_bytes(device: str, processes: int = 1) -> int:
    """Memory a run can take: this process's free GPU memory, or its share of the available RAM (measured
    before the model loads, whose weights the estimate counts itself)."""
    if device == "cuda":  # this process's own GPU (under accelerate, its LOCAL_RANK), not always the first
        import torch

        from tunepipe.devices import local_gpu

        return int(torch.cuda.mem_get_info(local_gpu())[0])
    import psutil

    return int(psutil.virtual_memory().available) // max(processes, 1)


def check_fits(parts: dict[str, float], budget: int, where: str, headroom: float = 0.9) -> dict[str, Any]:
    """Print the estimate; stop with one line when it passes the budget."""
    from tunepipe.errors import StageError

    total = sum(parts.values())
    shown = ", ".join(f"{name} {value / GIB:.2f}" for name, value in parts.items())
    print(f"[train] memory estimate {total / GIB:.2f} GiB ({shown}); {budget / GIB:.1f} GiB free")
    if total > headroom * budget:
        raise StageError(f"{where}: training needs about {total / GIB:.2f} GiB ({shown} GiB) but only "
                         f"{budget / GIB:.2f} GiB is free here: lower batch_size or max_length, use qlora, or "
                         f"train on a larger device")
    return {name: round(value / GIB, 3) for name, value in parts.items()}
