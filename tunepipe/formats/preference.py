"""Preference pairs: a prompt, the answer preferred (`chosen`) and the one not (`rejected`), for DPO.

Each row may come in any of the shapes the peers write (JSON lines, a JSON array, Parquet):
- TRL's, standard: `prompt`, `chosen`, `rejected` as text (tokenized as they are, with no chat template);
- TRL's, conversational: `prompt` as messages ending with the user's turn, `chosen` and `rejected` as the
  assistant's turn ([{role: assistant, content}], or plain text);
- TRL's implicit prompt: only `chosen` and `rejected`, each a whole conversation (the turns before the last
  must be the same on both sides) or a whole text (the prompt is their common start, as TRL takes it);
  LLaMA-Factory v1's `chosen_messages` and `rejected_messages` are read the same way;
- LLaMA-Factory's sharegpt: `conversations` ({from, value} turns ending with the human's) with `chosen` and
  `rejected` as {from: gpt, value} turns, and a `system` column (a `tools` column is not read);
- LLaMA-Factory's alpaca: `instruction`, `input`, optional `system` and `history`, `chosen` and `rejected` text.
Records: {kind: preference, prompt, chosen, rejected}, in TRL's standard or conversational shape. Rejected,
with the reason: a side missing or empty, chosen the same as rejected, sides whose prompts differ, a prompt
not ending with the user's turn.

A row with a boolean `label` is unpaired (KTO's data): one answer, marked desirable (true) or not (false):
- TRL's: `prompt` and `completion` (text, or turns), `label`;
- LLaMA-Factory's kto files: `messages` (or sharegpt `conversations`) ending with the assistant's answer, `label`.
Records: {kind: unpaired, prompt, completion, label}. A label that is not true or false is rejected.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from tunepipe.formats.rows import checked_messages, column, content_id, records_of, text_of
from tunepipe.formats.sharegpt import ROLES
from tunepipe.ledger import Ledger

OPTIONS = {"columns": {}, "roles": ROLES}


def turn(value: Any, side: str, roles: dict[str, str]) -> list[dict[str, str]]:
    """One side of a conversational pair as the assistant's turn: text, a {role, content} or {from, value}
    turn, or a list of one such turn."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        role = value.get("role") or roles.get(value.get("from"), value.get("from"))
        content = value.get("content", value.get("value"))
        if role != "assistant":
            raise ValueError(f"{side}: the answer must be the assistant's turn, not {role!r}")
        value = content
    return [{"role": "assistant", "content": text_of(value, side)}]


def prompt_turns(messages: list[dict[str, str]], what: str) -> list[dict[str, str]]:
    """A conversation up to the answer: checked as a chat with a placeholder answer, so the roles alternate
    and the last turn is the user's."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{what}: expected a non-empty list of turns")
    if messages[-1].get("role") == "assistant":
        raise ValueError(f"{what}: the last turn must be the user's (the answers are in chosen and rejected)")
    return checked_messages([*messages, {"role": "assistant", "content": "-"}], what)[:-1]


def implicit(chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
    """TRL's implicit prompt: the turns both conversations share, or the text both start with (to the last
    space before they differ, as TRL's extract_prompt takes it)."""
    if isinstance(chosen, list) and isinstance(rejected, list):
        chosen, rejected = checked_messages(chosen, "chosen"), checked_messages(rejected, "rejected")
        if chosen[:-1] != rejected[:-1]:
            raise ValueError("chosen and rejected differ before their last turn: the two sides have different prompts")
        return prompt_turns(chosen[:-1], "chosen"), chosen[-1:], rejected[-1:]
    chosen, rejected = text_of(chosen, "chosen"), text_of(rejected, "rejected")
    cut = next((n for n, (a, b) in enumerate(zip(chosen, rejected)) if a != b), min(len(chosen), len(rejected)))
    if cut and chosen[cut - 1] == " ":
        cut -= 1
    if not cut:
        raise ValueError("chosen and rejected share no prompt (an implicit prompt is the text both start with)")
    return chosen[:cut], chosen[cut:], rejected[cut:]


def sides(row: dict[str, Any], opts: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(prompt, chosen, rejected) in TRL's shape from any of the row shapes above."""
    columns, roles = opts["columns"], opts["roles"]
    # LLaMA-Factory v1 writes each side as a whole conversation, `chosen_messages` and `rejected_messages`
    chosen = column(row, columns, "chosen") or column(row, columns, "chosen_messages")
    rejected = column(row, columns, "rejected") or column(row, columns, "rejected_messages")
    for side, value in (("chosen", chosen), ("rejected", rejected)):
        if value is None:
            raise ValueError(f"missing field: {side} (or {side}_messages)")
    prompt = column(row, columns, "prompt")
    conversations = column(row, columns, "conversations")
    if conversations is not None:  # LLaMA-Factory's sharegpt
        from tunepipe.formats.sharegpt import to_messages

        shown = {"columns": {"messages": columns.get("conversations", "conversations"), **columns},
                 "roles": roles, "role_key": "from", "content_key": "value"}
        with_answer = {**row, shown["columns"]["messages"]: [*conversations, {"from": "gpt", "value": "-"}]}
        prompt = to_messages(with_answer, shown)[:-1]
    elif column(row, columns, "instruction") is not None:  # LLaMA-Factory's alpaca
        from tunepipe.formats.alpaca import to_record

        record = to_record({**row, "output": "-"}, columns)
        prompt = record["messages"][:-1] if record["kind"] == "chat" else (
            [{"role": "system", "content": record["system"]}] if record.get("system") else []) + [
            {"role": "user", "content": f"{record['instruction']}\n\n{record['input']}".strip()}]
    elif prompt is None:
        return implicit(chosen, rejected)
    if isinstance(prompt, str):
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            raise ValueError("a text prompt takes text answers (a conversational prompt is a list of turns)")
        return text_of(prompt, "prompt"), text_of(chosen, "chosen"), text_of(rejected, "rejected")
    return prompt_turns(prompt, "prompt"), turn(chosen, "chosen", roles), turn(rejected, "rejected", roles)


def unpaired(row: dict[str, Any], opts: dict[str, Any], label: Any) -> dict[str, Any]:
    """(prompt, completion) from TRL's columns or from a conversation ending with the answer, and its label."""
    if not isinstance(label, bool):
        raise ValueError(f"label: {label!r} is not true or false (desirable or not)")
    columns, roles = opts["columns"], opts["roles"]
    conversation = column(row, columns, "messages") or column(row, columns, "conversations")
    if conversation is not None and column(row, columns, "completion") is None:
        turns = [{"role": roles.get(t.get("from"), t.get("from")) if "from" in t else t.get("role"),
                  "content": t.get("value", t.get("content")), "loss_weight": t.get("loss_weight")}
                 if isinstance(t, dict) else t for t in conversation]
        messages = checked_messages(turns, "messages")
        prompt, completion = messages[:-1], messages[-1:]
    else:
        prompt, completion = column(row, columns, "prompt"), column(row, columns, "completion")
        if completion is None:
            raise ValueError("missing field: completion (or messages ending with the answer)")
        if isinstance(prompt, str):
            if not isinstance(completion, str):
                raise ValueError("a text prompt takes a text completion (a conversational prompt is a list of turns)")
            prompt, completion = text_of(prompt, "prompt"), text_of(completion, "completion")
        else:
            prompt, completion = prompt_turns(prompt, "prompt"), turn(completion, "completion", roles)
    # the answers to one prompt share its split: a prompt trained on is never scored on
    return {"kind": "unpaired", "prompt": prompt, "completion": completion, "label": label, "group": content_id(prompt)}


def to_record(row: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    if row.get("tools") not in (None, "", []):
        raise ValueError("column 'tools' is not read: the prompt would lose the tools it offers the model")
    label = column(row, opts["columns"], "label")
    if label is not None:
        return unpaired(row, opts, label)
    prompt, chosen, rejected = sides(row, opts)
    if chosen == rejected:
        raise ValueError("chosen and rejected are the same answer: nothing to prefer")
    return {"kind": "preference", "prompt": prompt, "chosen": chosen, "rejected": rejected}


def read(raw_dir: Path, options: dict[str, Any], ledger: Ledger) -> Iterator[dict[str, Any]]:
    opts = {**OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    return records_of(raw_dir, ledger, opts["columns"], lambda row: to_record(row, opts))
