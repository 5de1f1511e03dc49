"""Tokenizing a converted dataset's splits into Arrow files, streamed in chunks.

Training and validation rows longer than `max_length` are left out and listed in `dropped.jsonl`; test
rows are all kept (scores cover the whole split), a test prompt longer than the model's context (or
`eval_max_length`) cut by the rule in `fit_to_context`; a row that cannot fit the model's positions even
so fails, naming it. Records stream through in chunks (CHUNK_ROWS): one
batched tokenizer call per chunk, the Arrow file written as it goes, so memory stays flat whatever a split's
size (bench/tokenize_speed.py measures both).
"""
from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from datasets import Dataset, DatasetInfo, Features, Sequence, Value
from datasets.arrow_writer import ArrowWriter
from datasets.table import MemoryMappedTable
from tqdm import tqdm

from tunepipe.context import cut_middle
from tunepipe.encoders import ENCODERS, IGNORE, render_prompt
from tunepipe.errors import StageError
from tunepipe.files import iter_jsonl, sha256_file
from tunepipe.pairs import COLUMNS as PAIR_COLUMNS, UNPAIRED_COLUMNS, encode_pairs, encode_prompts, encode_unpaired, \
    objective_records
from tunepipe.rollouts import COLUMNS as ROLLOUT_COLUMNS, encode_rollouts
from tunepipe.splits import PART

SPLITS = ("train", "validation", "test")
CHUNK_ROWS = 1000  # records per batched tokenizer call and per Arrow write


def fit_to_context(row: dict[str, Any], kind: str, context: int, ends_special: bool) -> bool:
    """Cut an evaluation row longer than the model's context, keeping the row; True when it cut.

    The rule: a language model's prompt loses its middle (`cut_middle`: the instruction opens it; the
    question and the assistant turn close it) until prompt and answer fit, since the validation loss reads
    both. A head's input keeps its first tokens and, where the tokenizer ends it with one, its final special
    token; a word whose first sub-token is cut is predicted as O.
    """
    if kind in ("causal_lm", "seq2seq"):
        answer = row["input_ids"][row["prompt_length"]:]  # empty for seq2seq: its answer is the decoder's
        limit = max(context - len(answer), context // 2)
        if row["prompt_length"] <= limit:
            return False
        prompt = cut_middle(row["input_ids"][:row["prompt_length"]], limit)
        labels = row["labels"] if kind == "seq2seq" else [IGNORE] * limit + row["labels"][row["prompt_length"]:]
        row.update(input_ids=prompt + answer, labels=labels, prompt_length=limit)
        return True
    if len(row["input_ids"]) <= context:
        return False
    keep = context - 1 if ends_special else context
    for key in ("input_ids", "token_type_ids", "word_ids", "labels"):
        if isinstance(row.get(key), list):
            row[key] = row[key][:keep] + (row[key][-1:] if ends_special else [])
    row["prompt_length"] = len(row["input_ids"])
    return True


def fitted(row: dict[str, Any], row_id: str, split: str, kind: str, max_length: int, context: tuple[int, int],
           ends_special: bool, where: str) -> bool | None:
    """None: a training or validation row past max_length, left out (so validation measures the rows training
    sees, and no validation batch is longer than a training one). True: a test row cut by `fit_to_context` to
    `context`'s first figure (eval_max_length, or the model's positions; every test row is kept, so scores
    cover the whole split). A row that still passes a learned position table's size (the second figure, None
    for rotary and relative positions) fails here, naming it, rather than as an index error in training."""
    cut_to, positions = context  # positions: None where the model computes them (rotary, relative)
    cut = fit_to_context(row, kind, cut_to, ends_special) if split == "test" else False
    if split != "test" and len(row["input_ids"]) > max_length:
        return None
    if positions is not None and len(row["input_ids"]) > positions:
        prompt = row["prompt_length"] if kind == "causal_lm" else len(row["input_ids"])
        fix = ("its prompt is cut to half the context already: the answer alone is too long" if split == "test"
               else f"set max_length to at most {positions}")
        raise StageError(f"{where}: {split} row {row_id}: {len(row['input_ids'])} tokens ({prompt} of prompt) cannot fit "
                         f"the model's context of {positions} positions ({fix})")
    return cut


def encoder_for(setup: dict[str, Any], split: str):
    """The kind's encoder; a preference objective's rows are TRL's columns for training and validation, and
    causal rows to test."""
    objective = setup.get("objective")
    if objective == "grpo":  # the task's own rows: prompts to sample from, and causal rows to test
        return ENCODERS[setup["kind"]] if split == "test" else encode_rollouts
    if objective and split == "test":
        return encode_prompts
    return {"dpo": encode_pairs, "kto": encode_unpaired}.get(objective) or ENCODERS[setup["kind"]]


def encode_chunks(tokenizer, records: Iterable[dict[str, Any]], setup: dict[str, Any], params: dict[str, Any],
                  labels: list[str], where: str, split: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(record, encoded row) pairs, CHUNK_ROWS records per batched tokenizer call; nothing held beyond a chunk."""
    def readable(record: dict[str, Any]) -> dict[str, Any]:
        if record["kind"] not in setup["kind_rows"]:
            raise StageError(f"{where}: dataset '{setup['dataset']}' holds {record['kind']} rows; a "
                             f"{setup['kind']} reads {' or '.join(setup['kind_rows'])} rows")
        if record["kind"] == "labelled" and setup["kind"] in ("causal_lm", "seq2seq"):
            if not params.get("prompt"):
                raise StageError(f"{where}.prompt: a {setup['kind']} needs a prompt template to read the "
                                 f"labelled rows of '{setup['dataset']}'")
            return render_prompt(record, params["prompt"], where)
        return record

    records = iter(records)
    while chunk := [readable(record) for record in itertools.islice(records, CHUNK_ROWS)]:
        yield from zip(chunk, encoder_for(setup, split)(tokenizer, chunk, params, labels))


def text_pieces(record_id: str, row: dict[str, Any], size: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """A tokenized document as consecutive pieces of `size` tokens, ids `<id>#part<k>`."""
    for k, start in enumerate(range(0, len(row["input_ids"]), size)):
        piece = row["input_ids"][start:start + size]
        yield f"{record_id}{PART}{k}", {"input_ids": piece, "labels": list(piece), "prompt_length": 0}


def features_for(setup: dict[str, Any], tokenizer, split: str) -> Features:
    ids, kind = Sequence(Value("int32")), setup["kind"]
    if setup.get("objective") and split != "test":
        columns = {name: ids for name in {"dpo": PAIR_COLUMNS, "kto": UNPAIRED_COLUMNS}.get(setup["objective"],
                                                                                        ROLLOUT_COLUMNS)}
        columns.update({name: Value("bool" if name == "label" else "string") for name in ("label", "prompt_json",
                                                                                           "record_json") if name in columns})
        return Features({"id": Value("string"), **columns})
    columns = {"id": Value("string"), "input_ids": ids,
               "labels": Value("int64") if kind == "sequence_head" else ids, "prompt_length": Value("int32")}
    if kind == "token_head":
        columns["word_ids"] = ids
    if kind == "sequence_head" and "token_type_ids" in tokenizer.model_input_names:
        columns["token_type_ids"] = ids
    return Features(columns)


def tokenize_split(tokenizer, records: Iterable[dict[str, Any]], setup: dict[str, Any], params: dict[str, Any],
                   labels: list[str], split: str, where: str, context: tuple[int, int], writer: ArrowWriter,
                   columns: Iterable[str], dropped: list[dict[str, Any]]) -> dict[str, int]:
    """Encode a split's records into `writer` (a datasets ArrowWriter), CHUNK_ROWS at a time; the rows left
    out go to `dropped`; returns the counts."""
    max_length, special = int(params["max_length"]), set(tokenizer.all_special_ids)
    counts, longest = {"rows": 0, "tokens": 0, "dropped": 0, "truncated": 0}, 0
    batch: dict[str, list] = {name: [] for name in columns}
    progress = tqdm(desc=f"tokenize {split}", unit="row", disable=None, mininterval=5)
    left_out: list[dict[str, Any]] = []  # a preference objective's test rows with no reference
    if setup.get("objective"):
        records = objective_records(records, setup["objective"], split, left_out)
    for record, encoded in encode_chunks(tokenizer, records, setup, params, labels, where, split):
        progress.update()
        # plain text is cut into pieces of max_length (a long document is many training rows, not none)
        pieces = [(record["id"], encoded)] if record["kind"] != "text" or len(encoded["input_ids"]) <= max_length \
            else list(text_pieces(record["id"], encoded, max_length))
        for row_id, row in pieces:
            kept = fitted(row, row_id, split, setup["kind"], max_length, context, row["input_ids"][-1] in special,
                          where)
            if kept is None:
                dropped.append({"id": row_id, "split": split,
                                "reason": f"too long: {len(row['input_ids'])} > max_length {max_length} tokens"})
                counts["dropped"] += 1
                continue
            counts["truncated"] += kept
            row["id"] = row_id
            for name, column in batch.items():
                column.append(row[name])
            counts["rows"] += 1
            counts["tokens"] += len(row["input_ids"])
            longest = max(longest, len(row["input_ids"]))
            if len(batch["id"]) == CHUNK_ROWS:
                writer.write_batch(batch)
                batch = {name: [] for name in batch}
    if batch["id"]:
        writer.write_batch(batch)
    progress.close()
    dropped.extend(left_out)
    counts["dropped"] += len(left_out)
    print(f"[tokenize] {setup['dataset']} {split}: {counts['rows']} rows, {counts['tokens']} tokens, max {longest}, "
          f"dropped {counts['dropped']}, prompts cut to the context {counts['truncated']}")
    return counts


def input_fingerprint(path: Path, setup: dict[str, Any], params: dict[str, Any], base: Path) -> str:
    """The Arrow fingerprint from what decides the content (the converted split, params, tokenizer files),
    never a random id or a file time: state.json bytes stay the same from run to run."""
    digest = hashlib.sha256(json.dumps([setup, params], sort_keys=True, default=str).encode())
    for file in [path, *sorted(base.glob("tokenizer*")), *sorted(base.glob("special_tokens*"))]:
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()[:16]


def tokenize_splits(tokenizer, source: Path, setup: dict[str, Any], params: dict[str, Any], labels: list[str],
                    where: str, context: tuple[int, int], scratch: Path) -> tuple[dict[str, Dataset], dict[str, dict], list[dict]]:
    """Each split of the converted dataset in `source` as a memory-mapped Arrow dataset written in `scratch`,
    with its counts and the rows left out. `context`: (what test prompts are cut to, the model's positions)."""
    splits, counts, dropped = {}, {}, []
    for split in SPLITS:
        features = features_for(setup, tokenizer, split)
        path = source / f"{split}.jsonl"
        if not path.exists():
            raise StageError(f"{path}: not found (run dvc repro convert@{setup['dataset']})")
        arrow = scratch / f"{split}.arrow"
        # Streamed: records are read, encoded and written CHUNK_ROWS at a time, so memory stays flat
        # however large the split; the Arrow file is memory-mapped, not loaded, for save_to_disk.
        with ArrowWriter(features=features, path=str(arrow)) as writer:
            counts[split] = tokenize_split(tokenizer, iter_jsonl(path), setup, params, labels, split, where,
                                           context, writer, features, dropped)
            writer.finalize()
        splits[split] = Dataset(MemoryMappedTable.from_file(str(arrow)), info=DatasetInfo(features=features),
                                fingerprint=input_fingerprint(path, setup, params, Path("models/base") / setup["model"]))
    if not splits["train"].num_rows:
        raise StageError(f"{where}: no training row fits max_length {params['max_length']}")
    return splits, counts, dropped
