"""How much of each batch is padding: length-grouped batches (what train uses) vs random batches vs pad-to-512.

    python bench/padding.py [--rows N] [--batch-size 8]

Reads real DialogSum training rows from ../shared/data when present (else the embedded samples),
renders them with the SmolLM2 chat template exactly as the tokenize stage does, and batches them through
the Trainer's own samplers. Needs models/base/smollm2-135m (dvc repro fetch_model@smollm2-135m).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer
from transformers.trainer_pt_utils import LengthGroupedSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tunepipe.ledger import Ledger  # noqa: E402
from tunepipe.formats.dialogsum import read  # noqa: E402
from tunepipe.encoders import encode_causal  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared/data/dialogsum/dialogsum.train.2021-05.pydict.jsonl"


def waste(lengths: list[int], order: list[int], batch_size: int, pad_to: int | None = None) -> float:
    padded = real = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start:start + batch_size]]
        width = pad_to or max(batch)
        real += sum(batch)
        padded += width * len(batch) - sum(batch)
    return padded / (padded + real)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    source = REAL.parent if REAL.exists() else Path("data/samples/dialogsum")
    records = [r for r in read(source, {}, Ledger("bench")) if r["split"] == "train"][: args.rows]
    tokenizer = AutoTokenizer.from_pretrained("models/base/smollm2-135m")
    lengths = [len(encode_causal(tokenizer, r, {}, [])["input_ids"]) for r in records]
    lengths = [n for n in lengths if n <= 512]
    generator = torch.Generator().manual_seed(42)
    grouped = list(LengthGroupedSampler(args.batch_size, lengths=lengths, generator=generator))
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(42)).tolist()
    results = {"length-grouped, dynamic padding": waste(lengths, grouped, args.batch_size),
               "random batches, dynamic padding": waste(lengths, shuffled, args.batch_size),
               "random batches, pad to 512": waste(lengths, shuffled, args.batch_size, pad_to=512)}
    print(f"{len(lengths)} rows from {source}, mean {sum(lengths) / len(lengths):.0f} tokens, batch {args.batch_size}")
    base = results["length-grouped, dynamic padding"]
    for name, share in results.items():
        print(f"  {name:34s} {share:6.1%} of tokens are padding  ({share / base:5.1f}x the grouped waste)")


if __name__ == "__main__":
    main()
