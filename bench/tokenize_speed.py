"""The tokenize stage against the seeds' way, and how it scales.

Our way: the tokenize stage (tunepipe/tokenization.py) (chunks of records, one batched tokenizer call per chunk, offsets for the
prompt mask, Arrow written as it goes). The seeds' way: a per-example `Dataset.map` that renders the same
chat template, tokenizes each row alone padded to max_length, masks the prompt, and saves the padded Arrow.
Both read the same real DialogSum rows and run in this process with the same threads. Then the stage
itself, as a fresh process (startup included), on 1x, 10x and 100x the rows (replicated with new ids):
wall time and peak resident memory, to show time grows with the rows and memory does not.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import SMOLLM2, child, dialogsum_records, gib, target

MAX_LENGTH = 512
STAGE = """
import os, sys
os.chdir(sys.argv[1])
sys.argv = ["stages/tokenize.py", "bench"]
from stages import tokenize
tokenize.main(["bench"])
"""


def workspace(folder: Path, records: list[dict[str, Any]], copies: int) -> Path:
    """A minimal project folder the tokenize stage runs in: params, converted rows, the base model."""
    (folder / "data/converted/dialogsum").mkdir(parents=True)
    (folder / "models/base").mkdir(parents=True)
    os.symlink(SMOLLM2, folder / "models/base/smollm2-135m")
    params = {"experiments": {"bench": {"task": "bench", "dataset": "dialogsum", "model": "smollm2-135m",
                                        "kind": "causal_lm", "method": "lora", "metric": "rouge_any", "seed": 0}},
              "tokenize": {"bench": {"max_length": MAX_LENGTH, "system_prompt": None}}}
    (folder / "params.yaml").write_text(json.dumps(params))
    with open(folder / "data/converted/dialogsum/train.jsonl", "w", encoding="utf-8") as out:
        for copy in range(copies):
            for record in records:
                out.write(json.dumps({**record, "id": f"{record['id']}-{copy}"}, ensure_ascii=False) + "\n")
    (folder / "data/converted/dialogsum/labels.json").write_text("[]")
    for split in ("validation", "test"):
        (folder / f"data/converted/dialogsum/{split}.jsonl").write_text("")
    return folder


def seeds_way(records: list[dict[str, Any]], tokenizer, out: Path) -> None:
    from datasets import Dataset

    from tunepipe.encoders import prompt_text

    def encode(record):
        messages = [{"role": "user", "content": prompt_text(record)}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": record["output"]}],
                                             tokenize=False)
        encoded = tokenizer(full, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                            add_special_tokens=False)
        encoded["labels"] = [-100] * len(prompt) + encoded["input_ids"][len(prompt):]
        return encoded

    Dataset.from_list(records).map(encode, remove_columns=list(records[0])).save_to_disk(str(out))


def measure(rows: int = 2000, factors: tuple[int, ...] = (1, 10, 100), ratio_copies: int = 5) -> dict[str, Any]:
    import datasets
    import torch
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    records, source = dialogsum_records("train", rows)
    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2)
    lengths = [len(r) for r in tokenizer([r["output"] + r["instruction"] + r["input"] for r in records])["input_ids"]]
    section: dict[str, Any] = {
        "title": "Tokenization to Arrow", "rows": [], "targets": [], "notes": [],
        "inputs": {"rows": f"{len(records)} {source} rows (x1; x10 and x100 replicated with new ids)",
                   "model": "SmolLM2-135M-Instruct tokenizer and chat template",
                   "lengths": f"mean {sum(lengths) / len(lengths):.0f} text tokens per row; max_length {MAX_LENGTH}",
                   "threads": f"{torch.get_num_threads()} (the Rust tokenizer's own pool for batched calls)"}}
    with tempfile.TemporaryDirectory(prefix="bench-tokenize-") as tmp:
        against_seeds(section, records, tokenizer, tmp, ratio_copies)
        scaling(section, records, tmp, factors)
    return section


def against_seeds(section: dict[str, Any], records: list[dict[str, Any]], tokenizer, tmp: str, ratio_copies: int) -> None:
    """The stage, the seeds' per-example map and the Rust tokenizer's floor, on the same rows."""
    from stages import tokenize
    from tunepipe.encoders import prompt_text

    def ours(folder: Path) -> float:
        here = os.getcwd()
        os.chdir(folder)
        try:
            started = time.perf_counter()
            tokenize.main(["bench"])
            return time.perf_counter() - started
        finally:
            os.chdir(here)

    def seeds(rows: list[dict[str, Any]], name: str) -> float:
        started = time.perf_counter()
        seeds_way(rows, tokenizer, Path(tmp) / name)
        return time.perf_counter() - started

    # both warmed once on a few rows (imports, template compilation), then timed on `ratio_copies` x rows
    ours(workspace(Path(tmp) / "warm", records[:200], 1))
    seeds(records[:200], "seeds-warm")
    timed = len(records) * ratio_copies
    ours_s = ours(workspace(Path(tmp) / "ours", records, ratio_copies))
    seeds_s = seeds(records * ratio_copies, "seeds")
    section["rows"].append({"way": "tokenize stage (batched, streamed, no padding)", "rows": timed,
                            "seconds": round(ours_s, 2), "rows_per_s": round(timed / ours_s)})
    section["rows"].append({"way": "per-example Dataset.map, padded to max_length (the seeds')", "rows": timed,
                            "seconds": round(seeds_s, 2), "rows_per_s": round(timed / seeds_s)})
    section["targets"].append(target("tokenization rows/s, ours / seeds'", seeds_s / ours_s, ">= 5x",
                                     seeds_s / ours_s >= 5))
    # the floor: the Rust tokenizer's own batched encode of the same rendered texts, nothing else
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": prompt_text(r)},
                                            {"role": "assistant", "content": r["output"]}], tokenize=False)
             for r in records * ratio_copies]
    started = time.perf_counter()
    tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    floor = time.perf_counter() - started
    section["rows"].append({"way": "floor: the Rust tokenizer's batched encode alone", "rows": timed,
                            "seconds": round(floor, 2), "rows_per_s": round(timed / floor)})
    section["notes"].append(
        f"the tokenizer itself takes {floor / ours_s:.0%} of the stage's time; the seeds' loop costs "
        f"{seeds_s / floor:.1f}x that floor: a stage calling this tokenizer is at most that much faster than "
        "the seeds' loop even with nothing else to do. The rest of ours is reading JSON, rendering the chat "
        "template and writing Arrow.")


def scaling(section: dict[str, Any], records: list[dict[str, Any]], tmp: str, factors: tuple[int, ...]) -> None:
    """The stage in a child process on x1, x10, x100 the rows: its time and its peak memory."""
    rows = []
    for factor in factors:
        folder = workspace(Path(tmp) / f"x{factor}", records, factor)
        _, seconds, peak, allocated = child(STAGE, str(folder))
        rows.append({"rows": len(records) * factor, "seconds": round(seconds, 1), "peak_gib": gib(peak),
                     "peak_allocated_gib": gib(allocated),
                     "rows_per_s_with_startup": round(len(records) * factor / seconds)})
    section["scaling"] = rows
    first, last = rows[0], rows[-1]
    growth = (last["seconds"] - first["seconds"]) / max(first["seconds"], 1e-9)
    held = last["peak_allocated_gib"] / first["peak_allocated_gib"]
    section["targets"].append(target(f"peak allocated memory at {last['rows']} rows / at {first['rows']}", held,
                                     "about 1x (streams)", held < 1.2))
    section["notes"].append("peak gib is VmHWM, which also counts the pages of the memory-mapped Arrow file while "
                            "save_to_disk copies it; peak allocated gib is RssAnon (sampled every 20 ms): what "
                            "the stage itself holds.")
    section["notes"].append(f"time grows {growth:.0f}x from x1 to x{factors[-1]} (startup of about "
                            f"{first['seconds']:.0f} s is in every figure of the scaling table)")


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
