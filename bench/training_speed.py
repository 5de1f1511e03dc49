"""Training throughput: our batching against padding to max_length and against TRL's SFTTrainer defaults;
bf16 against fp32 on the CPU; model FLOPs utilisation against the measured matmul rate.

Every variant trains SmolLM2-135M-Instruct with the dialogsum-lora LoRA (r 16 on q/k/v/o), given the same
pool of real DialogSum rows (a training set, from which each trainer's sampler draws its batches), for the
same steps and batch, in a fresh process of its own, on the same threads. Useful tokens are the
non-padding tokens of the batches trained; a variant's rate is useful tokens over the seconds of
`trainer.train()`. Variants:
- ours: the train stage's TrainingArguments and collator (length-grouped batches, padded to the longest row).
- padded: the same, with random batches padded to max_length (512), as the seeds' tokenization did.
- sftt: trl.SFTTrainer with SFTConfig's defaults (only steps, seed, threads and the LoRA set), the rows given
  as prompt/completion conversations.
- bf16: ours under CPU bf16 autocast.
Then why bf16's loss curve lags fp32's (bench/bf16_curves.py).
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bf16_curves import DIAGNOSE, bf16_figures
from harness import SMOLLM2, child, cpu_has_bf16, dialogsum_records, matmul_rate, target

BENCH = Path(__file__).resolve().parent
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
MAX_LENGTH = 512
CHILD = f"""
sys.path.insert(0, {str(BENCH)!r})
from training_speed import run_variant
result = run_variant(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
"""


def sft_trainer(rows: list[dict], tokenizer, scratch: str, steps: int, batch: int):
    """TRL's SFTTrainer with its defaults, on the rows as prompt and completion turns."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from tunepipe.loading import load_base

    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                               "completion": [{"role": "assistant", "content": r["output"]}]} for r in rows])
    config = SFTConfig(output_dir=scratch, max_steps=steps, seed=0, use_cpu=True, report_to="none",
                       per_device_train_batch_size=batch, disable_tqdm=True)
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules=LORA["target_modules"], task_type="CAUSAL_LM")
    model = load_base("causal_lm", SMOLLM2)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=lora)
    settings = {k: getattr(config, k) for k in ("bf16", "gradient_checkpointing", "max_length", "packing",
                                                "learning_rate", "train_sampling_strategy")}
    return trainer, model, settings


def our_trainer(variant: str, rows: list[dict], tokenizer, scratch: str, steps: int, batch: int, threads: int):
    """The train stage's own model, collator and TrainingArguments on the tokenized rows."""
    from datasets import Dataset
    from transformers import Trainer, set_seed

    from tunepipe.collators import collator_for
    from tunepipe.loading import attach_method, load_base
    from tunepipe.training import training_arguments

    set_seed(0)
    data = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    params = {"lora": LORA, "learning_rate": 5e-4, "epochs": 1, "max_steps": steps, "batch_size": batch,
              "threads": threads, "precision": "bf16" if variant == "bf16" else "fp32",
              "sampling": "random" if variant == "padded" else "group_by_length", "checkpoint_steps": 10**6}
    setup = {"seed": 0, "method": "lora", "generates": True}
    model = attach_method(load_base("causal_lm", SMOLLM2), "causal_lm", "lora", params, SMOLLM2)
    collator = collator_for("causal_lm", tokenizer, model)
    if variant == "padded":
        collator.padding, collator.max_length = "max_length", MAX_LENGTH
    args = training_arguments(params, setup, Path(scratch), evaluate=False, precision=params["precision"])
    args.disable_tqdm = True
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator)
    return trainer, model, {"sampling": params["sampling"], "precision": params["precision"]}


def run_variant(variant: str, rows_file: str, steps: int, batch: int, threads: int) -> dict[str, Any]:
    import time

    import torch

    from tunepipe.devices import pin_threads
    from tunepipe.loading import load_tokenizer

    pin_threads(threads)
    rows = json.loads(Path(rows_file).read_text())
    tokenizer = load_tokenizer(SMOLLM2)
    scratch = tempfile.mkdtemp(prefix="bench-train-")
    trainer, model, settings = (sft_trainer(rows, tokenizer, scratch, steps, batch) if variant == "sftt"
                                else our_trainer(variant, rows, tokenizer, scratch, steps, batch, threads))
    inner = trainer.data_collator
    counts = {"real": 0, "padded": 0}

    def counting(features):
        out = inner(features)
        mask = out["attention_mask"]
        counts["real"] += int(mask.sum())
        counts["padded"] += int(mask.numel() - mask.sum())
        return out

    trainer.data_collator = counting
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    losses = [round(e["loss"], 4) for e in trainer.state.log_history if "loss" in e]
    lora_bytes = b"".join(p.detach().float().numpy().tobytes() for n, p in model.named_parameters() if "lora_" in n)
    return {"seconds": seconds, "real_tokens": counts["real"], "padded_tokens": counts["padded"], "losses": losses,
            "parameters": sum(p.numel() for p in model.parameters()), "settings": settings,
            "threads": torch.get_num_threads(), "lora_sha256": hashlib.sha256(lora_bytes).hexdigest()[:16]}


def measure(rows: int = 1000, steps: int = 5, batch: int = 8, threads: int = 2) -> dict[str, Any]:
    """`rows` is the pool each trainer's sampler draws from (a training set: length grouping needs one of
    some size to find batches of like lengths); each trains `steps` x `batch` rows of it."""
    from tunepipe.encoders import encode_causal
    from tunepipe.loading import load_tokenizer

    records, source = dialogsum_records("train", int(rows * 1.1), seed=1)
    tokenizer = load_tokenizer(SMOLLM2)
    encoded = [(r, e) for r, e in zip(records, encode_causal(tokenizer, records, {}, []))
               if len(e["input_ids"]) <= MAX_LENGTH][:rows]
    lengths = [len(e["input_ids"]) for _, e in encoded]
    section: dict[str, Any] = {
        "title": "Training: useful tokens per second", "rows": [], "targets": [], "notes": [],
        "inputs": {"model": "SmolLM2-135M-Instruct + LoRA r 16 (q/k/v/o)", "rows": f"a pool of {len(encoded)} {source} rows (<= {MAX_LENGTH} tokens)",
                   "lengths": f"mean {sum(lengths) / len(lengths):.0f}, max {max(lengths)} tokens",
                   "steps": f"{steps} of batch {batch}", "threads": threads}}
    bf16 = cpu_has_bf16()
    results = run_variants(section, encoded, steps, batch, threads, bf16)
    rate = speeds(section, results)
    utilisation(section, results, threads)
    bf16_figures(section, results, rate, steps, bf16)
    return section


def run_variants(section: dict[str, Any], encoded: list, steps: int, batch: int, threads: int,
                 bf16: bool) -> dict[str, dict]:
    """Each variant in its own child process on the same rows; bf16 twice more for byte-determinism."""
    from tunepipe.encoders import prompt_text

    variants = ["ours", "padded", "sftt"] + (["bf16"] if bf16 else [])
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        rows_file = Path(tmp) / "rows.json"
        rows_file.write_text(json.dumps([{"prompt": prompt_text(r), "output": r["output"], **e} for r, e in encoded]))
        for variant in variants:
            results[variant], _, peak, _ = child(CHILD, variant, str(rows_file), str(steps), str(batch), str(threads))
            results[variant]["peak_gib"] = round(peak / 2**30, 2)
        if bf16:  # byte-determinism: the same bf16 run twice, two steps
            again = [child(CHILD, "bf16", str(rows_file), "2", str(batch), str(threads))[0]["lora_sha256"]
                     for _ in range(2)]
            section["notes"].append(f"bf16, two runs of 2 steps: LoRA weights "
                                    f"{'identical' if again[0] == again[1] else 'DIFFER'} ({again[0]} / {again[1]})")
            section["bf16_diagnosis"], _, _, _ = child(DIAGNOSE, str(rows_file), str(batch), str(threads))
    return results


def speeds(section: dict[str, Any], results: dict[str, dict]) -> dict[str, float]:
    """Useful tokens per second of each variant, and the targets against padding and SFTTrainer."""
    rate = {}
    for variant, r in results.items():
        rate[variant] = r["real_tokens"] / r["seconds"]
        section["rows"].append({"variant": variant, "useful_tokens_per_s": round(rate[variant], 1),
                                "padding_share": round(r["padded_tokens"] / (r["real_tokens"] + r["padded_tokens"]), 4),
                                "seconds": round(r["seconds"], 1), "peak_gib": r["peak_gib"],
                                "loss_first_last": [r["losses"][0], r["losses"][-1]] if r["losses"] else None,
                                "settings": r["settings"]})
    section["losses"] = {variant: r["losses"] for variant, r in results.items()}
    ours = section["rows"][0]
    section["targets"].append(target("useful tokens/s, ours / padded to max_length", rate["ours"] / rate["padded"],
                                     ">= 1.7x", rate["ours"] / rate["padded"] >= 1.7))
    section["targets"].append(target("padding share of our batches", ours["padding_share"], "< 5%",
                                     ours["padding_share"] < 0.05))
    section["targets"].append(target("useful tokens/s, ours (fp32, our CPU default) / SFTTrainer defaults",
                                     rate["ours"] / rate["sftt"], ">= 1.5x", rate["ours"] / rate["sftt"] >= 1.5))
    if "bf16" in rate:  # SFTConfig's defaults train in bf16: the like-for-like precision
        section["targets"].append(target("useful tokens/s, ours in bf16 / SFTTrainer defaults (bf16)",
                                         rate["bf16"] / rate["sftt"], ">= 1.5x", rate["bf16"] / rate["sftt"] >= 1.5))

    return rate


def utilisation(section: dict[str, Any], results: dict[str, dict], threads: int) -> None:
    # model FLOPs utilisation: LoRA does ~4 x parameters FLOPs per token (forward, and the backward pass's
    # activation gradients; frozen weights get no weight gradient), counted over every token it computed
    parameters = results["ours"]["parameters"]
    fp32_rate = matmul_rate("float32", threads)
    section["matmul_gflops"] = {"float32": round(fp32_rate, 1)}
    mfu = {}
    for variant, dtype in (("ours", "float32"), ("bf16", "bfloat16")):
        if variant not in results:
            continue
        peak = fp32_rate if dtype == "float32" else section["matmul_gflops"].setdefault(
            "bfloat16", round(matmul_rate("bfloat16", threads), 1))
        r = results[variant]
        flops = 4 * parameters * (r["real_tokens"] + r["padded_tokens"]) / r["seconds"] / 1e9
        mfu[variant] = flops / peak
        section["targets"].append(target(f"MFU, {variant} ({dtype}): {flops:.0f} of {peak:.0f} GFLOP/s", mfu[variant],
                                         ">= 60% of the matmul rate", mfu[variant] >= 0.6))
    # SmolLM2's own matmul shape (a batch of ~2k tokens, hidden 576 -> MLP 1536) against the square one
    shaped = matmul_rate("float32", threads, shape=(2048, 576, 1536))
    section["matmul_gflops"]["float32 at the model's shape (2048x576 @ 576x1536)"] = round(shaped, 1)
    section["notes"].append(
        f"MFU counts only 4 x parameters per token; attention scores, norms, activations, the 49k-way softmax "
        f"and the optimizer are work it leaves out, and a matmul of the model's own shape runs at {shaped:.0f} "
        f"GFLOP/s, {shaped / fp32_rate:.0%} of the square one: ours reaches "
        f"{mfu['ours'] * fp32_rate / shaped:.0%} of that shaped rate.")


if __name__ == "__main__":
    print(json.dumps(measure(**{k: int(v) for k, v in (a.split("=") for a in sys.argv[1:])}), indent=2))
