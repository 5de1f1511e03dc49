"""Readers that turn a dataset's raw files into plain records: the seeds' release formats, and generic ones
for a user's own data.

A reader is `read(raw_dir: Path, options: dict, ledger: Ledger) -> Iterator[dict]`. It counts every raw
record in `ledger.read`, yields the good ones and hands each bad one to `ledger.reject(where, reason,
record)` with 'file:line' or 'file#id' so nothing is lost. A yielded record has a unique string `id`, a
`kind` and, when the release fixes it, a `split` (train / validation / test); otherwise the convert stage
assigns one by the hash of the record's `group` (default: its id). Records that must not straddle splits
(the sentences of one abstract, repeated sentences) share a `group`. Kinds and their fields:

- "instruction": instruction, input, output (+ optional system, and references: list of accepted outputs)
- "chat":        messages: [{role: system|user|assistant, content}], ending with an assistant turn
- "text":        text                      (plain text for completion training)
- "labelled":    text, (text_pair), label  (a classification example)
- "tokens":      tokens, tags              (IOB2 sequence labelling)
- "preference":  prompt, chosen, rejected  (TRL's standard or conversational shape, for DPO)

`OPTIONS` names the options a reader takes (with their defaults), so an experiment file with an unknown one
fails before anything runs. `LABELS`, where a release fixes its classes, is the label order of a head;
otherwise convert takes the `labels` option or the labels the data holds. A reader that draws a split itself
(PhraseBank's test set from a stricter agreement level) names it in `OWN_SPLITS`; convert then refuses split
ratios that would add other rows to it.

Readers never raise on bad records; they raise StageError only when the whole input is unusable
(no files at all, a wrong folder).
"""
from __future__ import annotations

import importlib
from types import ModuleType

READERS = {
    # the seeds' datasets, in their releases' own formats
    "collins": "tunepipe.formats.collins",
    "dialogsum": "tunepipe.formats.dialogsum",
    "jnlpba": "tunepipe.formats.jnlpba",
    "mrpc": "tunepipe.formats.mrpc",
    "phrasebank": "tunepipe.formats.phrasebank",
    "webqa": "tunepipe.formats.webqa",
    # your own data, in the formats the peers (LLaMA-Factory, axolotl, TRL) take
    "alpaca": "tunepipe.formats.alpaca",
    "sharegpt": "tunepipe.formats.sharegpt",
    "messages": "tunepipe.formats.messages",
    "text": "tunepipe.formats.text",
    "table": "tunepipe.formats.table",
    "preference": "tunepipe.formats.preference",  # chosen / rejected pairs, for DPO
}


def reader_module(name: str) -> ModuleType:
    """The reader's module: `read`, and `LABELS` (the label order a classification head uses) if it has one."""
    from tunepipe.errors import StageError

    if name not in READERS:
        raise StageError(f"unknown dataset format '{name}' (known: {', '.join(sorted(READERS))})")
    return importlib.import_module(READERS[name])


def known_options(name: str) -> set[str] | None:
    """The option names a reader takes (None: it checks its own)."""
    options = getattr(reader_module(name), "OPTIONS", None)
    return set(options) if options is not None else None
