"""One encoder per model kind (tunepipe/kinds.py has the table), each turning records into `input_ids` and `labels`:
- causal_lm: chat-templated prompt + answer; labels are the same ids with the prompt masked (-100), so the
  loss counts only the answer. `prompt_length` lets generation feed the prompt alone.
- seq2seq: the prompt is the encoder input, the answer (+ end of sequence) the decoder labels.
- token_head: words split into sub-tokens; a word's tag labels its first sub-token, -100 the rest;
  `word_ids` maps predictions back to words.
- sequence_head: a sentence or a sentence pair; the label's index in the dataset's labels.json.
Labelled rows reach a language model through `prompt` (a template and a verbaliser such as
{equivalent: "yes"}), so one converted dataset serves a head and an LLM alike. Nothing is padded here.
"""
from __future__ import annotations

import os
from typing import Any

from tunepipe.errors import StageError

IGNORE = -100  # label id that torch's cross-entropy skips

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


def ids_of(encoded) -> list[int]:
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
