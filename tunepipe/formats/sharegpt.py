"""ShareGPT: {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}], "system": optional}.

JSON lines or a JSON array (also Parquet), the format of ShareGPT dumps and of LLaMA-Factory's and
axolotl's `sharegpt` datasets. Speakers map to roles through `roles` (default: human/user -> user,
gpt/assistant/chatgpt/bard/model -> assistant, system -> system); a speaker outside the mapping (a tool
call, an observation) rejects the row with its name. Then the conversation is checked as every chat is: an
optional system turn, user and assistant alternating, the assistant's turn last. `columns` renames the
fields (`columns: {messages: conversations, system: system}`); `role_key` and `content_key` name the keys of
a turn (`from`, `value`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from tunepipe.ledger import Ledger
from tunepipe.formats.rows import checked_messages, column, records_of, unread_meaning

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
         "bard": "assistant", "model": "assistant", "system": "system"}
OPTIONS = {"columns": {"messages": "conversations"}, "roles": ROLES, "role_key": "from", "content_key": "value"}


def to_messages(row: dict[str, Any], opts: dict[str, Any]) -> list[dict[str, str]]:
    turns = column(row, opts["columns"], "messages")
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"missing field: {opts['columns'].get('messages', 'messages')}" if turns is None
                         else "conversations: expected a non-empty list")
    messages = []
    system = column(row, opts["columns"], "system")
    if system:
        messages.append({"role": "system", "content": system})
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise ValueError(f"conversations turn {number}: expected an object, got {type(turn).__name__}")
        speaker = turn.get(opts["role_key"])
        if speaker not in opts["roles"]:
            raise ValueError(f"conversations turn {number}: speaker {speaker!r} has no role (roles: "
                             f"{', '.join(sorted(opts['roles']))}; tool turns are not supported)")
        messages.append({"role": opts["roles"][speaker], "content": turn.get(opts["content_key"]),
                         "loss_weight": turn.get("loss_weight")})  # checked with the turn, never dropped
    return checked_messages(messages, "conversations")


def read(raw_dir: Path, options: dict[str, Any], ledger: Ledger) -> Iterator[dict[str, Any]]:
    opts = {**OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    opts["columns"] = {**OPTIONS["columns"], **(options.get("columns") or {})}

    def to_record(row: dict[str, Any]) -> dict[str, Any]:
        unread_meaning(row, "sharegpt")
        return {"kind": "chat", "messages": to_messages(row, opts)}

    return records_of(raw_dir, ledger, opts["columns"], to_record)
