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

# a language model's adapter: its base is frozen, so it may be stored and compute in half precision (a head's
# new classifier trains: heads keep fp32); on a CPU, bf16 only (where it has bf16 instructions)
BF16_ON_CPU = {"causal_lm": ("lora", "prompt_tuning"), "seq2seq": ("lora", "prompt_tuning")}
HALF = {"bf16": "bfloat16", "fp16": "float16"}


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


def frozen_dtype(precision: str, on_gpu: bool, kind: str, method: str) -> str:
    """The dtype a training run stores its base's frozen weights in: half precision (as resolved) for a
    language model's adapter on a GPU, as LLaMA-Factory, axolotl and TRL load it (a 7B base in 13.5 GB, not
    27); bf16 on a CPU that computes in it; float32 for heads, full fine-tuning and the rest."""
    half = HALF.get(precision)
    if half is None or method not in BF16_ON_CPU.get(kind, ()) or (not on_gpu and half != "bfloat16"):
        return "float32"
    return half


def inference_dtype(requested: str | None, kind: str, method: str) -> str:
    """The dtype predict and merge load a model in: `auto` is half precision for a language model on a GPU
    (bf16 where it computes in it natively, fp16 elsewhere), float32 on a CPU, for heads and for QLoRA (whose
    base de-quantizes to its own compute dtype)."""
    import torch

    if requested not in (None, "auto"):
        return requested
    if not torch.cuda.is_available() or kind not in BF16_ON_CPU or method == "qlora":
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16"


def qlora_compute_dtype(requested: str) -> str:
    """What a 4-bit base computes in: `auto` follows the precision a GPU resolves to (bf16 where it computes
    in it natively, fp16 elsewhere) and is float32 on a CPU."""
    if requested != "auto":
        return requested
    return HALF.get(resolved_precision("auto"), "float32")


def device_description() -> str:
    """What this process computes on, as the recipe and the checkpoints record it."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    index = local_gpu()
    major, minor = torch.cuda.get_device_capability(index)
    return f"cuda:{index} {torch.cuda.get_device_name(index)} (compute capability {major}.{minor})"


def one_process_one_gpu(processes: int) -> None:
    """With `processes: 1`, show this process only the first GPU it may use: on a machine with several, the
    Trainer would otherwise wrap the model in DataParallel over all of them (another batch size, other
    results) without being asked. It asks torch nothing: counting devices can start CUDA where NVML is
    absent, after which the variable is read no more. One GPU or none, the narrowing changes nothing."""
    if processes != 1 or os.environ.get("LOCAL_RANK") is not None:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # "" hides every GPU: left so
    os.environ["CUDA_VISIBLE_DEVICES"] = visible.split(",")[0].strip() if visible is not None else "0"


def deterministic_cuda() -> bool:
    """On a GPU, make a re-run of the same training give the same bytes: deterministic algorithms (an op with
    none warns), cuBLAS's fixed workspace (set before its first call) and cuDNN without autotuning. Bit-exact
    holds on the same GPU model, driver and library versions; another GPU computes other bits. On a CPU
    nothing is needed beyond pinned threads (pin_threads). Returns whether it applied."""
    import torch

    if not torch.cuda.is_available():
        return False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    return True


def pin_threads(threads: int) -> None:
    """Weights differ with the number of torch threads: pin it so results are the same bytes every run."""
    import torch

    torch.set_num_threads(int(threads))
