"""The train stage's memory estimate (stages/memory.py) against one measured LoRA training step.

    python bench/training_memory.py [--batch 8] [--length 512]

The estimate decides whether a run starts (it stops one that would not fit, before the hour it would
waste), so it must not undershoot. Each variant runs one forward and backward pass of SmolLM2-135M (the
default's models/base/smollm2-135m) as the train stage sets it up on a CPU with bf16: frozen base weights
stored in bf16, LoRA weights in fp32. Each runs in a fresh process, and its step's memory is that
process's VmHWM (peak resident) less its resident memory just before the forward pass, so the weights
loaded before it do not count. The estimate's matching part is its activations plus gradients.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models/base/smollm2-135m"
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
ALL_LINEAR = ATTENTION + ["gate_proj", "up_proj", "down_proj"]
VARIANTS = {  # name: (target modules, lora dropout, attention implementation)
    "attention adapters, dropout 0.05": (ATTENTION, 0.05, "sdpa"),
    "all linear adapters, dropout 0.05 (DialogSum's)": (ALL_LINEAR, 0.05, "sdpa"),
    "all linear adapters, no dropout": (ALL_LINEAR, 0.0, "sdpa"),
    "attention adapters, eager attention": (ATTENTION, 0.05, "eager"),
}

STEP = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
from stages.memory import estimate
model_dir, targets, dropout, attention, batch, length = sys.argv[2], sys.argv[3].split(","), float(sys.argv[4]), \\
    sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
torch.set_num_threads(2)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation=attention)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout, target_modules=targets,
                                         task_type="CAUSAL_LM"))
for parameter in model.parameters():  # the train stage keeps what trains in fp32
    if parameter.requires_grad:
        parameter.data = parameter.data.float()
model.train()
parts = estimate(model, batch, length, "adamw_torch", False, None, half_precision=True)
def status(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field)) * 1024
ids = torch.randint(100, model.config.vocab_size - 100, (batch, length))
before = status("VmRSS:")
model(input_ids=ids, labels=ids).loss.backward()
print(json.dumps({"measured": status("VmHWM:") - before, "estimated": parts["activations"] + parts["gradients"]}))
"""


def one_step(targets: list[str], dropout: float, attention: str, batch: int, length: int) -> dict[str, int]:
    done = subprocess.run([sys.executable, "-c", STEP, str(ROOT), str(MODEL), ",".join(targets), str(dropout),
                           attention, str(batch), str(length)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(batch: int = 8, length: int = 512) -> dict:
    if not MODEL.exists():
        raise SystemExit(f"{MODEL}: not found (run `make repro` first: the default fetches SmolLM2)")
    rows, worst = [], 0.0
    for name, (targets, dropout, attention) in VARIANTS.items():
        step = one_step(targets, dropout, attention, batch, length)
        ratio = step["measured"] / step["estimated"]
        worst = max(worst, ratio)
        rows.append({"variant": name, "estimated_gib": round(step["estimated"] / 2**30, 2),
                     "measured_gib": round(step["measured"] / 2**30, 2), "measured_per_estimated": round(ratio, 2)})
        print(f"[bench] training memory: {name}: {rows[-1]}", flush=True)
    return {"title": "Training memory: the estimate against a measured LoRA step",
            "inputs": {"model": "SmolLM2-135M (bf16 frozen base, LoRA r 16 in fp32)", "batch": batch,
                       "tokens per row": length, "threads": 2},
            "rows": rows,
            "targets": [{"name": "measured / estimated, worst variant", "value": round(worst, 2),
                         "goal": "<= 1.1 (the estimate may not undershoot)", "met": worst <= 1.1}],
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
