"""tokenize: data/converted/<dataset>/ -> data/tokenized/<experiment>/ (Arrow, `datasets.save_to_disk`).

One encoder per model kind (stages/modeling.py has the table), each writing `input_ids` and `labels`:
- causal_lm: chat-templated prompt + answer; labels are the same ids with the prompt masked (-100), so the
  loss counts only the answer. `prompt_length` lets generation feed the prompt alone.
- seq2seq: the prompt is the encoder input, the answer (+ end of sequence) the decoder labels.
- token_head: words split into sub-tokens; a word's tag labels its first sub-token, -100 the rest;
  `word_ids` maps predictions back to words.
- sequence_head: a sentence or a sentence pair; the label's index in the dataset's labels.json.
Labelled rows reach a language model through `prompt` (a template and a verbaliser such as
{equivalent: "yes"}), so one converted dataset serves a head and an LLM alike.
Nothing is padded here: the train stage pads per batch. Training rows longer than `max_length` are left
out and listed in `dropped.jsonl`; evaluation rows are all kept (scores cover the whole split), an
evaluation prompt longer than the model's context (or `eval_max_length`) cut by the rule in
`fit_to_context`. The counts per split go to reports/tokenize/<experiment>.json.
Records stream through in chunks (CHUNK_ROWS): one batched tokenizer call per chunk, the Arrow file written
as it goes, so memory stays flat whatever a split's size (bench/tokenize_speed.py measures both).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from datasets import Dataset, DatasetDict, DatasetInfo, Features, Sequence, Value
from datasets.arrow_writer import ArrowWriter
from datasets.table import MemoryMappedTable
from tqdm import tqdm

from stages.common import (
    PART,
    StageError,
    atomic_dir,
    one_item,
    iter_jsonl,
    read_labels,
    run_stage,
    sha256_file,
    write_json,
    write_jsonl,
)
from stages.settings import load_experiment, where as setting
from stages.modeling import cut_middle, model_context

SPLITS = ("train", "validation", "test")
IGNORE = -100  # label id that torch's cross-entropy skips
CHUNK_ROWS = 1000  # records per batched tokenizer call and per Arrow write
NOT_A_PREFIX = ("the chat template renders the prompt differently with and without the answer (or a turn "
                "differently once later turns follow); labels cannot be masked on the prompt for this model "
                "(tokenize.chat_template sets another template)")


def render_prompt(record: dict[str, Any], template: dict[str, Any], where: str) -> dict[str, Any]:
    """A labelled row as instruction / input / output through str.format templates over its text fields
    and `{label}` (verbalised through template.labels); the original label stays in the row."""
    fields = {key: value for key, value in record.items() if isinstance(value, str)}
    fields["label"] = str(template.get("labels", {}).get(record["label"], record["label"]))
    try:
        rendered = {name: template.get(name, default).format(**fields)
                    for name, default in (("instruction", ""), ("input", ""), ("output", "{label}"))}
    except KeyError as err:
        raise StageError(f"{where}.prompt: template field {err} is not in a labelled row "
                         f"(fields: {', '.join(sorted(fields))})") from None
    return {**record, **rendered}


def prompt_text(record: dict[str, Any]) -> str:
    return f"{record['instruction']}\n\n{record['input']}".strip() if record.get("input") else record["instruction"]


def _ids(encoded) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True); older ones a list
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def _causal_row(ids: list[int], prompt_length: int) -> dict[str, Any]:
    return {"input_ids": ids, "labels": [IGNORE] * prompt_length + ids[prompt_length:], "prompt_length": prompt_length}


def conversation(record: dict[str, Any], system: str | None) -> list[dict[str, str]]:
    """A record as chat turns: an instruction is one user turn and its answer; a system prompt opens it
    (the record's own, else tokenize.system_prompt) unless the conversation brings one."""
    if record["kind"] == "chat":
        turns = list(record["messages"])
    else:
        turns = [{"role": "user", "content": prompt_text(record)}, {"role": "assistant", "content": record["output"]}]
        system = record.get("system") or system
    return ([{"role": "system", "content": system}] if system and turns[0]["role"] != "system" else []) + turns


def token_at(prefix: str, full: str, ids: list[int], encoding, tokenizer) -> int:
    """How many leading tokens of `full` render `prefix`, asked of the Rust encoding (character to token);
    where no token starts there, `prefix` is tokenized on its own, as apply_chat_template would, and must
    be a prefix of the row's tokens."""
    if not full.startswith(prefix):
        raise StageError(NOT_A_PREFIX)
    if len(prefix) == len(full):
        return len(ids)
    if encoding is not None:
        cut = encoding.char_to_token(len(prefix))
        if cut is not None and encoding.token_to_chars(cut)[0] == len(prefix):
            return cut
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    if ids[:len(prefix_ids)] != prefix_ids:
        raise StageError(NOT_A_PREFIX)
    return len(prefix_ids)


def turn_end(agree: int, full: str, ids: list[int], encoding, tokenizer) -> int:
    """The first token not wholly inside full[:agree] (the end of an assistant turn): the two renderings
    may agree a few characters into the next token ("<|" of "<|user|>" and of "<|endoftext|>")."""
    if agree >= len(full):
        return len(ids)
    if encoding is not None and (token := encoding.char_to_token(agree)) is not None:
        return token
    prefix_ids = tokenizer(full[:agree], add_special_tokens=False)["input_ids"]
    return next((n for n, (a, b) in enumerate(zip(prefix_ids, ids)) if a != b), min(len(prefix_ids), len(ids)))


def encode_text(tokenizer, records: list[dict[str, Any]]) -> list[dict]:
    """Plain text: every token is learnt (nothing to mask), the document ends with end-of-sequence."""
    ids = tokenizer([r["text"] for r in records], add_special_tokens=True)["input_ids"]
    return [{"input_ids": row + [tokenizer.eos_token_id], "labels": row + [tokenizer.eos_token_id], "prompt_length": 0}
            for row in ids]


def encode_causal(tokenizer, records: list[dict[str, Any]], params: dict[str, Any], labels: list[str]) -> list[dict]:
    """Chat-templated conversations with the loss on the assistant's turns only (every one, or with
    `assistant_turns: last` the final one), each turn's end-of-turn token included: the model learns to
    stop. User turns, system prompts and the template's own markup are masked (-100)."""
    texts = [r for r in records if r["kind"] == "text"]
    if texts:
        if len(texts) < len(records):  # plain text mixed with conversations: one call each
            return [row for r in records for row in encode_causal(tokenizer, [r], params, labels)]
        return encode_text(tokenizer, records)
    if not tokenizer.chat_template:  # a base model with no chat template: plain prompt, answer, end-of-sequence
        if any(r["kind"] == "chat" for r in records):
            raise StageError("multi-turn chat rows need a chat template, and this model has none: set "
                             "tokenize.chat_template (a Jinja template)")
        prompts = tokenizer([prompt_text(r) + "\n\n" for r in records], add_special_tokens=True)["input_ids"]
        answers = tokenizer([r["output"] for r in records], add_special_tokens=False)["input_ids"]
        return [_causal_row(p + a + [tokenizer.eos_token_id], len(p)) for p, a in zip(prompts, answers)]
    chats = [conversation(record, params.get("system_prompt")) for record in records]
    render = tokenizer.apply_chat_template
    fulls = render(chats, tokenize=False)
    # apply_chat_template(tokenize=True) is the tokenizer on the rendered text with no special tokens added;
    # one batched call runs on all of the Rust tokenizer's threads; the Rust encodings say where each turn
    # starts (read directly: converting every row's offsets to Python lists would cost as much as tokenizing)
    if tokenizer.is_fast:
        encoded = [(e.ids, e) for e in tokenizer.backend_tokenizer.encode_batch(fulls, add_special_tokens=False)]
    else:
        encoded = [(ids, None) for ids in tokenizer(fulls, add_special_tokens=False)["input_ids"]]
    turns = [[i for i, turn in enumerate(chat) if turn["role"] == "assistant"] for chat in chats]
    if params.get("assistant_turns") == "last":
        turns = [answers[-1:] for answers in turns]
    # every prompt before an assistant turn (generation prompt included) and every conversation through it,
    # rendered in two batched calls
    before = iter(render([chat[:i] for chat, answers in zip(chats, turns) for i in answers],
                         add_generation_prompt=True, tokenize=False))
    through = iter(render([chat[:i + 1] for chat, answers in zip(chats, turns) for i in answers], tokenize=False))
    rows = []
    for full, (ids, encoding), answers in zip(fulls, encoded, turns):
        masked = [IGNORE] * len(ids)
        start = 0
        for _ in answers:
            prompt, answered = next(before), next(through)
            start = token_at(prompt, full, ids, encoding, tokenizer)
            # the turn ends where the conversation through it stops agreeing with the whole one: a template
            # that closes a conversation with end-of-sequence (Phi-3) adds it after the last turn only
            agree = len(os.path.commonprefix([answered, full]))
            if agree <= len(prompt):
                raise StageError(NOT_A_PREFIX)
            end = turn_end(agree, full, ids, encoding, tokenizer)
            masked[start:end] = ids[start:end]
        rows.append({"input_ids": ids, "labels": masked, "prompt_length": start})  # start: of the last answer
    return rows


def encode_seq2seq(tokenizer, records: list[dict[str, Any]], params: dict[str, Any], labels: list[str]) -> list[dict]:
    prompts = tokenizer([prompt_text(r) for r in records], add_special_tokens=True)["input_ids"]  # T5 appends </s>
    answers = tokenizer(text_target=[r["output"] for r in records], add_special_tokens=True)["input_ids"]
    return [{"input_ids": p, "labels": a, "prompt_length": len(p)} for p, a in zip(prompts, answers)]


def encode_token_head(tokenizer, records: list[dict[str, Any]], params: dict[str, Any], labels: list[str]) -> list[dict]:
    encoded = tokenizer([r["tokens"] for r in records], is_split_into_words=True, return_attention_mask=False)
    index = {tag: i for i, tag in enumerate(labels)}
    rows = []
    for i, record in enumerate(records):
        word_ids = [-1 if w is None else w for w in encoded.word_ids(i)]
        tag_ids, previous = [], -1
        for word in word_ids:  # the first sub-token of a word carries its tag; the rest and specials are ignored
            tag_ids.append(index[record["tags"][word]] if word >= 0 and word != previous else IGNORE)
            previous = word
        ids = encoded["input_ids"][i]
        rows.append({"input_ids": ids, "labels": tag_ids, "word_ids": word_ids, "prompt_length": len(ids)})
    return rows


def encode_sequence_head(tokenizer, records: list[dict[str, Any]], params: dict[str, Any], labels: list[str]) -> list[dict]:
    pairs = [r.get("text_pair") for r in records]
    if len({p is None for p in pairs}) > 1:  # single sentences mixed with pairs: one call each
        return [row for r in records for row in encode_sequence_head(tokenizer, [r], params, labels)]
    encoded = tokenizer([r["text"] for r in records], None if pairs[0] is None else pairs,
                        return_attention_mask=False)
    rows = []
    for i, record in enumerate(records):
        ids = encoded["input_ids"][i]
        row = {"input_ids": ids, "labels": labels.index(record["label"]), "prompt_length": len(ids)}
        if "token_type_ids" in encoded:  # BERT tells the two sentences of a pair apart by these
            row["token_type_ids"] = encoded["token_type_ids"][i]
        rows.append(row)
    return rows


ENCODERS = {"causal_lm": encode_causal, "seq2seq": encode_seq2seq,
            "token_head": encode_token_head, "sequence_head": encode_sequence_head}


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


def encode_chunks(tokenizer, records: Iterable[dict[str, Any]], setup: dict[str, Any], params: dict[str, Any],
                  labels: list[str], where: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
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
        yield from zip(chunk, ENCODERS[setup["kind"]](tokenizer, chunk, params, labels))


def text_pieces(record_id: str, row: dict[str, Any], size: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """A tokenized document as consecutive pieces of `size` tokens, ids `<id>#part<k>`."""
    for k, start in enumerate(range(0, len(row["input_ids"]), size)):
        piece = row["input_ids"][start:start + size]
        yield f"{record_id}{PART}{k}", {"input_ids": piece, "labels": list(piece), "prompt_length": 0}


def features_for(kind: str, tokenizer) -> Features:
    ids = Sequence(Value("int32"))
    columns = {"id": Value("string"), "input_ids": ids,
               "labels": Value("int64") if kind == "sequence_head" else ids, "prompt_length": Value("int32")}
    if kind == "token_head":
        columns["word_ids"] = ids
    if kind == "sequence_head" and "token_type_ids" in tokenizer.model_input_names:
        columns["token_type_ids"] = ids
    return Features(columns)


def tokenize_split(tokenizer, records: Iterable[dict[str, Any]], setup: dict[str, Any], params: dict[str, Any],
                   labels: list[str], split: str, where: str, context: int, writer: ArrowWriter,
                   columns: Iterable[str], dropped: list[dict[str, Any]]) -> dict[str, int]:
    """Encode a split's records into `writer` (a datasets ArrowWriter), CHUNK_ROWS at a time; the rows left
    out go to `dropped`; returns the counts."""
    max_length, special = int(params["max_length"]), set(tokenizer.all_special_ids)
    counts, longest = {"rows": 0, "tokens": 0, "dropped": 0, "truncated": 0}, 0
    batch: dict[str, list] = {name: [] for name in columns}
    progress = tqdm(desc=f"tokenize {split}", unit="row", disable=None, mininterval=5)
    for record, encoded in encode_chunks(tokenizer, records, setup, params, labels, where):
        progress.update()
        # plain text is cut into pieces of max_length (a long document is many training rows, not none)
        pieces = [(record["id"], encoded)] if record["kind"] != "text" or len(encoded["input_ids"]) <= max_length \
            else list(text_pieces(record["id"], encoded, max_length))
        for row_id, row in pieces:
            # A training row must fit max_length whole, or it is left out (listed). Every evaluation row is
            # kept, so scores cover the whole split: a prompt past the model's context is cut by a fixed rule.
            if split != "train":
                counts["truncated"] += fit_to_context(row, setup["kind"], context, row["input_ids"][-1] in special)
            elif len(row["input_ids"]) > max_length:
                dropped.append({"id": row_id, "split": split,
                                "reason": f"too long: {len(row['input_ids'])} > max_length {max_length} tokens"})
                counts["dropped"] += 1
                continue
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


def main(argv: list[str]) -> None:
    experiment = one_item(argv, "tokenize")
    setup = load_experiment(experiment, "tokenize")
    params = setup.pop("tokenize")
    from transformers import AutoTokenizer

    where = setting(experiment, "tokenize")
    source = Path("data/converted") / setup["dataset"]
    labels = read_labels(setup)
    base = Path("models/base") / setup["model"]
    tokenizer = AutoTokenizer.from_pretrained(base)
    if params.get("chat_template"):
        tokenizer.chat_template = params["chat_template"]
    context = int(params.get("eval_max_length") or model_context(base, tokenizer))
    features = features_for(setup["kind"], tokenizer)

    dropped, counts = [], {}
    with atomic_dir(Path("data/tokenized") / experiment) as out, tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        splits = {}
        for split in SPLITS:
            path = source / f"{split}.jsonl"
            if not path.exists():
                raise StageError(f"{path}: not found (run dvc repro convert@{setup['dataset']})")
            arrow = Path(scratch) / f"{split}.arrow"
            # Streamed: records are read, encoded and written CHUNK_ROWS at a time, so memory stays flat
            # however large the split; the Arrow file is memory-mapped, not loaded, for save_to_disk.
            with ArrowWriter(features=features, path=str(arrow)) as writer:
                counts[split] = tokenize_split(tokenizer, iter_jsonl(path), setup, params, labels, split, where,
                                               context, writer, features, dropped)
                writer.finalize()
            splits[split] = Dataset(MemoryMappedTable.from_file(str(arrow)), info=DatasetInfo(features=features),
                                    fingerprint=input_fingerprint(path, setup, params, base))
        if not splits["train"].num_rows:
            raise StageError(f"{where}: no training row fits max_length {params['max_length']}")
        DatasetDict(splits).save_to_disk(str(out))
        write_jsonl(out / "dropped.jsonl", dropped)
    write_json(Path("reports/tokenize") / f"{experiment}.json", counts)  # the report shows what was dropped


if __name__ == "__main__":
    run_stage(main)
