"""Deterministic placement: which split a record lands in, seeded choices, and the ids tokenize gives pieces.

Every choice is fixed by a record's key alone (a hash), the same on every run, machine and Python version,
so adding records never moves existing ones.
"""
from __future__ import annotations

import hashlib
from typing import Any

from tunepipe.errors import StageError


def stable_fraction(key: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by `key` alone: the same on every run, machine and Python version."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def stable_choice(key: str, options: list[Any], salt: str = "") -> tuple[int, Any]:
    index = int(stable_fraction(key, salt) * len(options))
    return index, options[index]


def split_for(key: str, ratios: dict[str, float], salt: str = "split") -> str:
    """Assign an example to a split by the hash of its id, so adding rows never moves existing ones."""
    total = sum(ratios.values())
    if total <= 0:
        raise StageError(f"split ratios must add up to more than 0, got {ratios}")
    point = stable_fraction(key, salt) * total
    for name, share in ratios.items():
        if point < share:
            return name
        point -= share
    return list(ratios)[-1]

PART = "#part"  # a piece of a long plain-text document, as tokenize cuts it: <record id>#part<k>


def source_id(row_id: str) -> str:
    """The converted record a tokenized row came from (a piece of a long document carries #part<k>)."""
    head, sep, tail = row_id.rpartition(PART)
    return head if sep and tail.isdigit() else row_id
