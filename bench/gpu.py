"""GPU: the train stage's LoRA step on real architectures, built from their configs (no weights can be
downloaded; the figures depend on shapes, not values), stored as the stage stores a GPU adapter run's base.

    python bench/run.py --only gpu          # on a machine with CUDA (skipped, saying so, without one)

For SmolLM2-135M (its config from models/base/) and Llama-2-7b (the shapes of ../shared/hub-pins.md), each
with and without gradient checkpointing: useful tokens per second under bf16 autocast (the Trainer's), model
FLOPs utilisation against this device's own measured bf16 matmul rate, the step's peak allocated memory
against the train stage's estimate (tunepipe/memory.py; it must not undershoot), and whether two runs from
the same seed end with the same adapter bytes (tunepipe/devices.py deterministic_cuda).
"""
from __future__ import annotations

import hashlib
import time
from typing import Any

from harness import SMOLLM2, target

LLAMA2_7B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                 intermediate_size=11008, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
                 tie_word_embeddings=False)
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
SHAPES = {"smollm2-135m": (8, 512), "llama-2-7b": (4, 1024)}  # (batch, tokens per row)


def bf16_matmul_rate(size: int = 8192, repeats: int = 20) -> float:
    """This device's bf16 matmul rate in TFLOP/s, measured: the peak MFU is counted against."""
    import torch

    a, b = (torch.randn(size, size, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size ** 3 * repeats / (time.perf_counter() - started) / 1e12


def build(name: str, checkpointing: bool, seed: int = 0):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    from tunepipe.loading import attach_method

    config = AutoConfig.from_pretrained(SMOLLM2) if name == "smollm2-135m" else LlamaConfig(**LLAMA2_7B)
    torch.manual_seed(seed)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return attach_method(model, "causal_lm", "lora", {"lora": LORA}, SMOLLM2).train()


def run(name: str, checkpointing: bool, steps: int = 5, seed: int = 0) -> dict[str, Any]:
    """`steps` timed LoRA steps after one warm-up; peak memory of a step; the adapter's bytes at the end."""
    import torch

    from tunepipe import memory
    from tunepipe.activations import kept_activations

    batch, length = SHAPES[name]
    model = build(name, checkpointing, seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=True)
    ids = torch.randint(100, model.config.vocab_size - 100, (batch, length), device="cuda",
                        generator=torch.Generator("cuda").manual_seed(seed))
    kept = kept_activations(model, "causal_lm", "lora", {"lora": LORA}, SMOLLM2, batch, length, checkpointing)
    parts = memory.estimate(model, batch, length, "adamw_torch", kept, None, logits_bytes=2)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()  # the warm-up step is the one measured for memory (the optimizer's state appears in it)
    peak = torch.cuda.max_memory_allocated() - before
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    adapter = b"".join(p.detach().float().cpu().numpy().tobytes() for p in trainable)
    parameters = sum(p.numel() for p in model.parameters())
    estimated = parts["activations"] + parts["gradients"] + parts["optimizer"]
    return {"tokens_per_s": batch * length * steps / seconds, "flops": 4 * parameters * batch * length * steps / seconds,
            "peak_gib": peak / 2**30, "estimated_gib": estimated / 2**30,
            "adapter_sha256": hashlib.sha256(adapter).hexdigest()[:16]}


def measure() -> dict[str, Any]:
    import torch

    from tunepipe.devices import deterministic_cuda

    if not torch.cuda.is_available():
        return {"title": "GPU", "skipped": "no CUDA device on this machine", "rows": [], "targets": [], "notes": []}
    deterministic_cuda()
    peak = bf16_matmul_rate()
    rows, targets = [], []
    for name in SHAPES:
        for checkpointing in (False, True):
            r = run(name, checkpointing)
            torch.cuda.empty_cache()  # the run's model and optimizer are gone with it
            rows.append({"model": name, "checkpointing": checkpointing, "tokens_per_s": round(r["tokens_per_s"]),
                         "mfu": round(r["flops"] / 1e12 / peak, 3), "peak_gib": round(r["peak_gib"], 2),
                         "estimated_gib": round(r["estimated_gib"], 2),
                         "measured_per_estimated": round(r["peak_gib"] / r["estimated_gib"], 2)})
        again = run(name, False)["adapter_sha256"] == run(name, False)["adapter_sha256"]
        targets.append(target(f"{name}: two runs, same adapter bytes", int(again), "1 (bit-exact on one GPU)", again))
    worst = max(row["measured_per_estimated"] for row in rows)
    targets.append(target("peak allocated / estimated, worst variant", worst, "<= 1.0 (never under)", worst <= 1.0))
    return {"title": "GPU: LoRA steps on real architectures (bf16 base, autocast)",
            "inputs": {"device": torch.cuda.get_device_name(0), "bf16 matmul TFLOP/s (measured, 8192²)": round(peak, 1),
                       "adapter": "LoRA r 16 on q/k/v/o, dropout 0.05", "shapes": str(SHAPES)},
            "rows": rows, "targets": targets,
            "notes": ["MFU counts 4 x parameters FLOPs per token (LoRA: no weight gradient for the frozen base); "
                      "peak is torch.cuda.max_memory_allocated over the first step, less what was allocated "
                      "before it, against the estimate's activations, gradients and optimizer state."]}
