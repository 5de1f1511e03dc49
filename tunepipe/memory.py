"""How much memory a training run needs, estimated before it starts, and how much the device has.

An out-of-memory crash an hour into a run costs the hour; this estimate costs a second. It counts:
- weights: the loaded model's parameters and buffers as they sit in memory (4-bit weights count as packed);
- gradients: one per trainable parameter, in its dtype;
- optimizer state: AdamW keeps two moments per trainable parameter (4 bytes each; 1 byte each for the
  8-bit paged optimizer);
- activations: what the forward pass keeps for the backward one, counted on the meta device for this very
  model, adapters and batch (tunepipe/activations.py), plus what the backward pass adds as it starts: the
  loss's gradient over the logits, twice in fp32 (the loss's and its log-softmax's) and once in the logits'
  own dtype, then one layer's gradients (eager attention's: its scores' too) while the rest is kept;
- evaluation: where the longest validation batch needs more than the training step's activations (its logits,
  their fp32 copy and log-softmax, with nothing kept for a backward pass), the difference.
Activations are multiplied by the device's ALLOCATOR_SLACK (what the allocator holds beyond live tensors);
framework buffers come on top, so the stop triggers at `headroom` (90%) of the free memory. bench/training_memory.py measures it against real steps.
"""
from __future__ import annotations

from typing import Any

GIB = 1024 ** 3
# what a step holds beyond its live tensors: on a CPU, freed blocks glibc keeps resident (those under its mmap
# threshold, such as each adapter's input copy), measured 1.08-1.21x the live bytes of SmolLM2 LoRA steps
# (bench/training_memory.py); on a GPU the estimate is checked against the caching allocator's live bytes
ALLOCATOR_SLACK = {"cpu": 1.25, "cuda": 1.0}


def _config_value(config, *names: str, default: int = 0) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def estimate(model, batch_size: int, seq_len: int, optimizer: str, kept: tuple[int, int],
             outputs: int | None = None, eval_len: int = 0, logits_bytes: int = 4, slack: float = 1.0) -> dict[str, float]:
    """Bytes of each part of a training step's peak, for this model, batch and longest row.

    `kept`: the activations the forward pass keeps and one layer's share of them
    (tunepipe.activations.kept_activations). `outputs`: the
    width of the output layer per position (the vocabulary of a language model, the number of labels of a
    token head; a sequence head has one output row per example, not per position). `eval_len`: the longest
    validation row; `logits_bytes`: the size of one logit in the model's own dtype; `slack`: the device's
    ALLOCATOR_SLACK, applied to what a step allocates and frees (activations).
    """
    vocab = outputs if outputs is not None else _config_value(model.config, "vocab_size")
    trainable = [p for p in model.parameters() if p.requires_grad]
    kept_bytes, layer = kept
    # the backward pass starts with the loss's gradient over the logits; then, layer by layer, each layer's
    # gradients (about what it kept) while the layers below still hold theirs
    backward = batch_size * seq_len * vocab * (4 + 4 + logits_bytes) + layer
    if getattr(model.config, "_attn_implementation", None) == "eager":  # the scores' gradients, twice in fp32
        heads = _config_value(model.config, "num_attention_heads", "num_heads", "n_head", default=1)
        backward += batch_size * heads * seq_len * seq_len * 8
    evaluation = batch_size * eval_len * vocab * (logits_bytes + 4 + 4)
    return {
        "weights": sum(p.numel() * p.element_size() for p in model.parameters())
        + sum(b.numel() * b.element_size() for b in model.buffers()),
        "gradients": sum(p.numel() * p.element_size() for p in trainable),
        "optimizer": sum(p.numel() for p in trainable) * 2 * (1 if "8bit" in optimizer else 4),
        "activations": int((kept_bytes + backward) * slack),
        "evaluation": max(0, int(evaluation * slack) - int((kept_bytes + backward) * slack)),
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
