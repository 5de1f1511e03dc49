"""Why bf16's loss curve lags fp32's on the CPU (`diagnose_bf16`): one fixed batch trained a few steps with
AdamW in fp32, in bf16, and in bf16 with the LoRA path kept in fp32, logging both the loss the step computed
and the fp32 loss of the weights it reached; and the bf16 figures of the training benchmark
(bench/training_speed.py) that read it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import SMOLLM2, target

BENCH = Path(__file__).resolve().parent
CURVE_TOLERANCE = 0.02  # largest per-step loss gap to fp32 that would let bf16 be the CPU default
DIAGNOSE = f"""
sys.path.insert(0, {str(BENCH)!r})
from bf16_curves import diagnose_bf16
result = diagnose_bf16(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
"""


def diagnose_bf16(rows_file: str, batch: int, threads: int, steps: int = 3) -> dict[str, Any]:
    """One fixed batch, AdamW, a few steps, in each precision: the loss each step computed, and the fp32
    loss of the weights it started from (the same forward for all three, so only the weights differ)."""
    import torch

    from tunepipe.devices import pin_threads
    from tunepipe.collators import collator_for
    from tunepipe.loading import attach_method, load_base, load_tokenizer

    pin_threads(threads)
    rows = json.loads(Path(rows_file).read_text())[:batch]
    tokenizer = load_tokenizer(SMOLLM2)
    from training_speed import LORA

    params = {"lora": {**LORA, "dropout": 0.0}}
    result = {}
    for mode in ("fp32", "bf16", "bf16-fp32-adapters"):
        torch.manual_seed(0)
        model = attach_method(load_base("causal_lm", SMOLLM2), "causal_lm", "lora", params, SMOLLM2)
        if mode == "bf16-fp32-adapters":
            fp32_adapters(model)
        inputs = collator_for("causal_lm", tokenizer, model)([{"input_ids": r["input_ids"], "labels": r["labels"]}
                                                              for r in rows])
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4, weight_decay=0.0)
        logged, fp32_loss = [], []
        for _ in range(steps):
            with torch.no_grad():
                fp32_loss.append(round(model(**inputs).loss.item(), 4))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "fp32"):
                loss = model(**inputs).loss
            logged.append(round(loss.item(), 4))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        result[mode] = {"logged": logged, "fp32_loss": fp32_loss}
    return result


def fp32_adapters(model) -> int:
    """Run every LoRA A/B in fp32 with autocast off: under bf16 autocast their small early updates are
    otherwise rounded away when added to the frozen layer's bf16 output."""
    import torch

    class Float32Linear(torch.nn.Linear):
        def forward(self, x):
            with torch.autocast(device_type=x.device.type, enabled=False):
                return super().forward(x.float())

    count = 0
    for name, module in model.named_modules():
        if (name.split(".")[-2:-1] in (["lora_A"], ["lora_B"])) and type(module) is torch.nn.Linear:
            module.__class__ = Float32Linear
            count += 1
    return count


def bf16_figures(section: dict[str, Any], results: dict[str, dict], rate: dict[str, float], steps: int,
                 bf16: bool) -> None:
    """bf16 against fp32: speed, the loss curves' gap, and why the logged curve lags."""
    if bf16:
        section["notes"].append("bf16 under autocast re-casts every frozen fp32 weight to bf16 in every forward "
                                "and keeps norms, softmax and the loss in fp32, so it reaches a small share of the "
                                "bf16 matmul rate; weights stored in bf16 would remove the casts.")
        speedup = rate["bf16"] / rate["ours"]
        section["targets"].append(target("bf16 / fp32 tokens/s", speedup, ">= 1.7x", speedup >= 1.7))
        gap = max(abs(a - b) for a, b in zip(results["bf16"]["losses"], results["ours"]["losses"]))
        section["notes"].append(f"bf16 against fp32 on the same batches: largest per-step loss gap {gap:.3f} over "
                                f"{steps} steps")
        diagnosis = section["bf16_diagnosis"]
        logged = max(abs(a - b) for a, b in zip(diagnosis["bf16"]["logged"], diagnosis["fp32"]["logged"]))
        weights = max(abs(a - b) for a, b in zip(diagnosis["bf16"]["fp32_loss"], diagnosis["fp32"]["fp32_loss"]))
        adapters = max(abs(a - b) for a, b in zip(diagnosis["bf16"]["logged"], diagnosis["bf16-fp32-adapters"]["logged"]))
        section["targets"].append(target("bf16 curve: largest gap of the logged loss to fp32 (fixed batch)", logged,
                                         f"<= {CURVE_TOLERANCE} to make bf16 the CPU default",
                                         logged <= CURVE_TOLERANCE))
        section["notes"].append(
            f"why bf16's curve lags: on one fixed batch the loss bf16 logs trails fp32's by up to {logged:.3f}, but "
            f"the same bf16-trained weights scored in fp32 trail by only {weights:.3f}: the gradients agree, the "
            "weights learn alike; the bf16 forward pass rounds activations to 8 bits of mantissa, which hides "
            f"much of each small update from the loss it computes. Keeping the LoRA path in fp32 moves the logged "
            f"curve by at most {adapters:.3f}: it is not the rounding of the adapter's add to the frozen output.")
    else:
        section["notes"].append("bf16: skipped, this CPU has no avx512_bf16 / amx_bf16")
