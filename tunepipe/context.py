"""How many positions a model takes, and how a prompt too long for them is cut."""
from __future__ import annotations

import json
from pathlib import Path


def model_context(folder: Path, tokenizer) -> int:
    """How many positions the model takes: its position table, else the tokenizer's limit (T5's relative
    positions have no table; its tokenizer says 512)."""
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    limit = tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else None
    return min(filter(None, (positions, limit)), default=512)


def cut_middle(ids: list[int], limit: int) -> list[int]:
    """A prompt longer than `limit` keeps its first and last halves of it: the instruction opens a prompt,
    the question and the assistant turn close it; the middle of the input is what can go."""
    return ids if len(ids) <= limit else ids[:limit // 2] + ids[len(ids) - (limit - limit // 2):]


def learned_positions(folder: Path) -> bool:
    """Whether the model looks positions up in a learned table (GPT-2, GPT-Neo, BERT), where a row past it is
    an index error, rather than computing them (rotary, relative), where a longer row runs, only less well."""
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    return "n_positions" in config or config.get("model_type") in ("gpt_neo", "gptj") \
        or config.get("position_embedding_type") == "absolute"
