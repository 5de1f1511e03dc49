"""Where a process computes and in what precision: the GPU it owns, the precision `auto` resolves to, threads.

Nothing here starts CUDA unless asked what device a process has: one_process_one_gpu runs before it starts.
"""
from __future__ import annotations

import os
from pathlib import Path


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def local_gpu() -> int:
    """This process's GPU: its rank on this machine under accelerate/torchrun, else the first visible one."""
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
    import torch

    if processes != 1 or os.environ.get("LOCAL_RANK") is not None or torch.cuda.device_count() <= 1:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = visible.split(",")[0] if visible else "0"


def pin_threads(threads: int) -> None:
    """Weights differ with the number of torch threads: pin it so results are the same bytes every run."""
    import torch

    torch.set_num_threads(int(threads))
