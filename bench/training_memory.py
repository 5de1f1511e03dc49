"""The train stage's memory estimate (tunepipe/memory.py) against one measured LoRA training step.

    python bench/training_memory.py [--batch 8] [--length 512]

The estimate decides whether a run starts (it stops one that would not fit, before the hour it would
waste), so it must not undershoot. Each variant runs one forward and backward pass of SmolLM2-135M (the
default's models/base/smollm2-135m) as the train stage sets it up on a CPU with bf16: frozen base weights
stored in bf16, LoRA weights in fp32 (peft keeps an adapter over a bf16 base in fp32), loaded and wrapped
by the stage's own functions. Each runs in a fresh process, and its step's memory is that process's VmHWM
(peak resident) less its resident memory just before the forward pass, so the weights loaded before it do
not count. The estimate's matching part is its activations plus gradients.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import SMOLLM2, child, gib, target  # noqa: E402

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
ALL_LINEAR = ATTENTION + ["gate_proj", "up_proj", "down_proj"]
VARIANTS = {  # name: (target modules, lora dropout, attention implementation)
    "attention adapters, dropout 0.05": (ATTENTION, 0.05, "sdpa"),
    "all linear adapters, dropout 0.05 (DialogSum's)": (ALL_LINEAR, 0.05, "sdpa"),
    "all linear adapters, no dropout": (ALL_LINEAR, 0.0, "sdpa"),
    "attention adapters, eager attention": (ATTENTION, 0.05, "eager"),
}

# the train stage's own loading and adapter (tunepipe/loading.py), its bf16 storage for a CPU adapter run
STEP = """
import json, sys, torch
from pathlib import Path
from harness import peak_rss
from tunepipe.activations import kept_activations
from tunepipe.loading import attach_method, load_base
from tunepipe.memory import ALLOCATOR_SLACK, estimate
folder, targets, dropout, attention, batch, length = Path(sys.argv[1]), sys.argv[2].split(","), \\
    float(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
torch.set_num_threads(2)
torch.manual_seed(0)
model = load_base("causal_lm", folder, dtype="bfloat16")
model.set_attn_implementation(attention)
lora = {"r": 16, "alpha": 32, "dropout": dropout, "target_modules": targets}
model = attach_method(model, "causal_lm", "lora", {"lora": lora}, folder).train()
kept = kept_activations(model, "causal_lm", "lora", {"lora": lora}, folder, batch, length, False)
parts = estimate(model, batch, length, "adamw_torch", kept, None, logits_bytes=2, slack=ALLOCATOR_SLACK["cpu"])
ids = torch.randint(100, model.config.vocab_size - 100, (batch, length))
before = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:"))
model(input_ids=ids, labels=ids).loss.backward()
result = {"measured": peak_rss() - before, "estimated": parts["activations"] + parts["gradients"],
          "fp32_trainable": all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)}
"""


def measure(batch: int = 8, length: int = 512) -> dict:
    if not SMOLLM2.exists():
        raise SystemExit(f"{SMOLLM2}: not found (run `make repro` first: the default fetches SmolLM2)")
    rows, worst = [], 0.0
    for name, (targets, dropout, attention) in VARIANTS.items():
        step, _, _, _ = child(STEP, str(SMOLLM2), ",".join(targets), str(dropout), attention, str(batch), str(length))
        assert step["fp32_trainable"], "the adapter should train in fp32 over the bf16 base, as in the train stage"
        ratio = step["measured"] / step["estimated"]
        worst = max(worst, ratio)
        rows.append({"variant": name, "estimated_gib": gib(step["estimated"]), "measured_gib": gib(step["measured"]),
                     "measured_per_estimated": round(ratio, 2)})
        print(f"[bench] training memory: {name}: {rows[-1]}", flush=True)
    return {"title": "Training memory: the estimate against a measured LoRA step",
            "inputs": {"model": "SmolLM2-135M (bf16 frozen base, LoRA r 16 in fp32)", "batch": batch,
                       "tokens per row": length, "threads": 2},
            "rows": rows,
            "targets": [target("measured / estimated, worst variant", worst,
                               "<= 1.0 (the estimate may not undershoot)", worst <= 1.0),
                        target("estimated / measured, worst variant", max(r["estimated_gib"] / r["measured_gib"]
                                                                          for r in rows),
                               "<= 1.2 (nor stop a run that fits)", all(r["estimated_gib"] / r["measured_gib"] <= 1.2
                                                                        for r in rows))],
            "notes": ["One step's peak resident memory less the resident memory before it; the estimate's "
                      "activations and gradients for the same model, batch and length."]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    args = parser.parse_args()
    print(json.dumps(measure(args.batch, args.length), indent=2))


if __name__ == "__main__":
    main()
