"""Batches for training: each padded to its own longest row, counting real against padded tokens."""
from __future__ import annotations

from typing import Any


def collator_for(kind: str, tokenizer, model=None):
    """Pads each batch to its own longest row (labels with -100) and counts real vs padded tokens."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorForTokenClassification, DataCollatorWithPadding

    base = {"causal_lm": DataCollatorForSeq2Seq, "seq2seq": DataCollatorForSeq2Seq,
            "token_head": DataCollatorForTokenClassification, "sequence_head": DataCollatorWithPadding}[kind]
    options: dict[str, Any] = {"padding": "longest"}
    if base is not DataCollatorWithPadding:
        options["label_pad_token_id"] = -100
    if kind == "seq2seq":
        options["model"] = model  # builds decoder_input_ids from the labels

    class CountingCollator(base):
        real_tokens = 0  # instance counts once a batch is counted (the class values are the start)
        padded_tokens = 0

        def __call__(self, features, *args, **kwargs):
            batch = super().__call__(features, *args, **kwargs)
            mask = batch["attention_mask"]
            self.real_tokens += int(mask.sum())
            self.padded_tokens += int(mask.numel() - mask.sum())
            return batch

    return CountingCollator(tokenizer, **options)
