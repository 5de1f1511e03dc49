"""Peak memory of a LoRA merge: shard by shard (tunepipe/lora_shards.py) vs peft's whole-model merge_and_unload.

    python bench/merge_memory.py [--layers 26] [--hidden 1024] [--shard-size 250MB] [--keep DIR]

Builds a Llama-architecture model from a config with random weights (default ~510M parameters, fp32, saved
in several safetensors shards), a random LoRA adapter (r 16 on q/k/v/o/gate/up/down), and merges it both
ways, each in its own fresh process so that one's memory cannot hide in the other's peak. Peak resident
memory is the child's VmHWM (its own address space's high-water mark; ru_maxrss would carry in the peak
of whatever process forked it); the model is built in a process of its own too. Prints both peaks, their ratio, the wall times, and whether every merged
tensor is identical. Needs ~3x the model's size in free disk under the temporary directory.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WHOLE = """
import resource, sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
base, adapter, out = sys.argv[1:4]
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
model.merge_and_unload().save_pretrained(out, safe_serialization=True, max_shard_size=sys.argv[4])
print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')))
"""
BY_SHARD = """
import resource, sys
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from tunepipe.lora_shards import merge_by_shard
merge_by_shard(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')))
"""


def build(folder: Path, layers: int, hidden: int, shard_size: str) -> int:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
                         num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, vocab_size=32000,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder / "base", safe_serialization=True, max_shard_size=shard_size)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                           "up_proj", "down_proj"])
    peft_model = get_peft_model(model, lora)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; a trained adapter's is not
            parameter.data.normal_(std=0.02)
    peft_model.save_pretrained(folder / "adapter")
    return parameters


def run(script: str, *args: str) -> tuple[int, float]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return int(result.stdout.split()[-1]) * 1024, time.perf_counter() - started  # VmHWM is in KiB


def identical(first: Path, second: Path) -> bool:
    import torch
    from safetensors import safe_open

    from tunepipe.lora_shards import shard_files

    def where(folder: Path) -> dict[str, Path]:
        names = {}
        for name in shard_files(folder):
            with safe_open(folder / name, "pt") as shard:
                names.update(dict.fromkeys(shard.keys(), folder / name))
        return names

    a, b = where(first), where(second)
    if set(a) != set(b):
        return False
    for key in sorted(a):  # one tensor pair at a time
        with safe_open(a[key], "pt") as x, safe_open(b[key], "pt") as y:
            if not torch.equal(x.get_tensor(key), y.get_tensor(key)):
                return False
    return True


def measure(layers: int = 26, hidden: int = 1024, shard_size: str = "250MB", keep: Path | None = None) -> dict:
    """The bench/run.py section: both merges of one built model, their peaks, times and equality."""
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="merge-bench-") as scratch:
        folder = keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        built = subprocess.run([sys.executable, __file__, "--build-only", str(folder), "--layers", str(layers),
                                "--hidden", str(hidden), "--shard-size", shard_size],
                               capture_output=True, text=True, check=True)
        parameters = int(built.stdout.split()[-1])
        shards = len(list((folder / "base").glob("*.safetensors")))
        base, adapter = str(folder / "base"), str(folder / "adapter")
        whole_peak, whole_s = run(WHOLE, base, adapter, str(folder / "whole"), shard_size)
        shard_peak, shard_s = run(BY_SHARD, base, adapter, str(folder / "by-shard"), str(ROOT))
        same = identical(folder / "whole", folder / "by-shard")
    ratio = shard_peak / whole_peak
    return {"title": "LoRA merge: shard by shard against peft's whole-model merge",
            "inputs": {"model": f"Llama architecture from a config, random weights, fp32, {parameters / 1e6:.0f}M "
                                f"parameters ({layers} layers, hidden {hidden}) in {shards} shards of <= {shard_size}",
                       "adapter": "LoRA r 16 on q/k/v/o/gate/up/down", "processes": "each merge in a fresh one"},
            "rows": [{"way": "whole model (peft merge_and_unload)", "peak_gib": round(whole_peak / 2**30, 2),
                      "seconds": round(whole_s, 1)},
                     {"way": "shard by shard (tunepipe/lora_shards.py)", "peak_gib": round(shard_peak / 2**30, 2),
                      "seconds": round(shard_s, 1)}],
            "targets": [{"name": "peak memory, shard by shard / whole model", "value": round(ratio, 3),
                         "goal": "< 0.5x", "met": ratio < 0.5},
                        {"name": "merged tensors identical", "value": float(same), "goal": "1.0", "met": same}],
            "notes": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=26)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--shard-size", default="250MB")
    parser.add_argument("--keep", type=Path, help="build here and keep the files (default: a temporary folder)")
    parser.add_argument("--build-only", type=Path, help=argparse.SUPPRESS)  # the child that builds the model
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.build_only:
        print(build(args.build_only, args.layers, args.hidden, args.shard_size))
        return
    result = measure(args.layers, args.hidden, args.shard_size, args.keep)
    print(json.dumps(result, indent=2))
    if not result["targets"][1]["met"]:
        raise SystemExit("merged tensors differ")


if __name__ == "__main__":
    main()
