"""How many bytes a training step's forward pass keeps for the backward one, counted, not guessed.

The model is built again on PyTorch's meta device (same architecture, dtype, adapters, dropout and attention
implementation; tensors with shapes and no data) and one forward pass with its loss runs there under a
saved-tensors hook that adds up every storage autograd keeps, each once (the q, k and v adapters share one
input). Nothing is computed and nothing is allocated, so it costs a fraction of a second for any model size,
and it sees what a formula misses: LoRA dropout's copies of each adapted layer's input, the real width of a
gated MLP, the fp32 copies of the logits a half-precision model's loss makes, attention scores kept by eager
attention. It runs with one layer and with two: their difference is one layer's share and the rest is what
sits outside the layers (embeddings, logits), so gradient checkpointing (each layer's input kept, one
layer's full set alive at a time in the backward pass) is counted from the same two runs.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

LAYER_COUNTS = ("num_hidden_layers", "num_layers", "n_layer", "num_decoder_layers")  # names configs use


def layers_of(config) -> int:
    """Transformer blocks in all (an encoder-decoder's encoder and decoder layers together)."""
    counts = [getattr(config, name, None) for name in LAYER_COUNTS]
    encoder = next((c for c in counts[:3] if isinstance(c, int) and c > 0), 0)
    decoder = counts[3] if isinstance(counts[3], int) and counts[3] > 0 else 0
    return encoder + decoder


def with_layers(config, count: int):
    """A copy of `config` with `count` layers in each stack it has."""
    config = copy.deepcopy(config)
    for name in LAYER_COUNTS:
        if isinstance(getattr(config, name, None), int):
            setattr(config, name, count)
    return config


def saved_by_forward(config, kind: str, method: str, params: dict[str, Any], base: Path, dtype, batch: int,
                     seq_len: int) -> int:
    """Bytes of the storages one forward pass and its loss keep for the backward pass, on the meta device."""
    import torch
    import transformers

    from tunepipe.kinds import KINDS
    from tunepipe.loading import attach_method

    if kind != "sequence_head":  # no pad id: no data-dependent padding check (a meta tensor has no data to read)
        config = copy.copy(config)
        config.pad_token_id = None
    with torch.device("meta"):
        model = getattr(transformers, KINDS[kind].auto_class).from_config(config, dtype=dtype)
        model = attach_method(model, kind, "lora" if method == "qlora" else method, params, base).train()
        inputs = meta_inputs(kind, config, batch, seq_len)
    kept: dict[int, int] = {}
    weights = {t.untyped_storage()._cdata for t in (*model.parameters(), *model.buffers())}  # not activations
    # on the meta device SDPA takes its math path, which keeps the (length x length) scores; the fused kernels
    # a CPU or GPU runs keep q, k, v, the output and a per-row log-sum-exp instead
    fused = getattr(config, "_attn_implementation", None) == "sdpa"

    def count(tensor):
        storage = tensor.untyped_storage()
        scores = fused and tensor.dim() >= 3 and tensor.shape[-1] == tensor.shape[-2] == seq_len
        if storage._cdata not in weights and not scores:
            kept[storage._cdata] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
        model(**inputs).loss
    return sum(kept.values())


def meta_inputs(kind: str, config, batch: int, seq_len: int) -> dict[str, Any]:
    """A batch of the right shapes for `kind` (labels included, so the loss is part of the step)."""
    import torch

    ids = torch.zeros((batch, seq_len), dtype=torch.long)
    if kind == "sequence_head":
        return {"input_ids": ids, "labels": torch.zeros(batch, dtype=torch.long)}
    return {"input_ids": ids, "labels": ids.clone()}


def kept_activations(model, kind: str, method: str, params: dict[str, Any], base: Path, batch: int, seq_len: int,
                     checkpointing: bool, dtype=None) -> tuple[int, int]:
    """(bytes the step keeps between its forward and backward passes, for the real model's layer count; bytes
    one layer keeps, about what its backward pass makes as gradients while all the rest is still kept).
    `dtype`: the frozen weights' compute dtype where they are stored otherwise (QLoRA's 4-bit)."""
    import torch

    config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    frozen = next((p.dtype for p in model.parameters() if not p.requires_grad and p.is_floating_point()), torch.float32)
    dtype = dtype or (frozen if frozen in (torch.float32, torch.bfloat16, torch.float16) else torch.float32)
    try:
        one, two = (saved_by_forward(with_layers(config, n), kind, method, params, base, dtype, batch, seq_len)
                    for n in (1, 2))
    except (RuntimeError, NotImplementedError, ValueError) as err:  # a forward that reads its data (GPT-2 heads)
        print(f"[train] memory estimate: activations not counted ({str(err).splitlines()[0][:120]}); "
              "the estimate below covers weights, gradients, optimizer state and logits only")
        return 0, 0
    per_layer, outside = two - one, 2 * one - two
    layers = layers_of(config)
    if not checkpointing:
        return outside + layers * per_layer, per_layer
    hidden = next(v for v in (getattr(config, k, None) for k in ("hidden_size", "d_model", "n_embd")) if v)
    inputs = batch * seq_len * hidden * torch.empty((), dtype=dtype).element_size()
    return outside + layers * inputs + per_layer, per_layer  # every layer's input, one layer recomputed at a time
