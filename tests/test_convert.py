"""convert's own rules around the readers: what a release's splits become."""
from __future__ import annotations

import json
import shutil

import pytest

from tunepipe.errors import StageError
from tunepipe.ledger import Ledger
from tunepipe.conversion import convert
from tests.conftest import REPO

SAMPLES = REPO / "data/samples/dialogsum"


def release(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(SAMPLES / "sample.train.jsonl", raw / "dialogsum.train.jsonl")
    shutil.copy(SAMPLES / "sample.dev.jsonl", raw / "dialogsum.dev.jsonl")
    return raw


def test_release_splits_rename_a_split_and_carve_another_by_hash(tmp_path):
    raw = release(tmp_path)
    dev_ids = {json.loads(line)["fname"] for line in (raw / "dialogsum.dev.jsonl").read_text().splitlines()}
    params = {"format": "dialogsum",
              "release_splits": {"validation": "test", "train": {"train": 0.75, "validation": 0.25}}}
    by_split = convert(raw, params, Ledger("t"))
    assert {row["id"] for row in by_split["test"]} == dev_ids  # the release's dev file, every row of it
    carved = {row["id"] for row in by_split["validation"]}
    assert carved and not carved & dev_ids and len(by_split["train"]) + len(carved) == 64
    again = convert(raw, params, Ledger("t"))  # by hash: the same rows every run
    assert {row["id"] for row in again["validation"]} == carved
    plain = convert(raw, {"format": "dialogsum"}, Ledger("t"))  # without it the release's splits stay
    assert {row["id"] for row in plain["validation"]} == dev_ids and not plain["test"]


def test_release_splits_naming_an_unknown_split_is_one_line(tmp_path):
    with pytest.raises(StageError, match=r"release_splits: validation: dev names an unknown split"):
        convert(release(tmp_path), {"format": "dialogsum", "release_splits": {"validation": "dev"}}, Ledger("t"))


MRPC = REPO / "data/samples/mrpc"


def test_swapped_pair_copies_double_train_only_and_keep_the_books():
    params = {"format": "mrpc", "release_splits": {"validation": "test", "train": {"train": 0.8, "validation": 0.2}}}
    plain_ledger, swapped_ledger = Ledger("plain"), Ledger("swapped")
    plain = convert(MRPC, params, plain_ledger)
    swapped = convert(MRPC, {**params, "swapped_pair_copies": True}, swapped_ledger)
    assert swapped["validation"] == plain["validation"] and swapped["test"] == plain["test"]  # scored rows unchanged
    originals = {row["id"]: row for row in plain["train"]}
    assert len(swapped["train"]) == 2 * len(originals) > 0
    for row in swapped["train"]:
        if row["id"].endswith("#swapped"):
            source = originals[row["id"].removesuffix("#swapped")]
            assert (row["text"], row["text_pair"], row["label"]) == (source["text_pair"], source["text"],
                                                                   source["label"])
        else:
            assert row == originals[row["id"]]
    summary = swapped_ledger.summary()
    assert summary["synthesized"] == len(originals)
    assert summary["read"] + summary["synthesized"] == summary["written"] + summary["rejected"] + summary["dropped"]


def test_swapped_pair_copies_need_pairs_and_a_boolean(tmp_path):
    with pytest.raises(StageError, match="swapped_pair_copies is on, but no training record has a text_pair"):
        convert(release(tmp_path), {"format": "dialogsum", "swapped_pair_copies": True}, Ledger("t"))
    with pytest.raises(StageError, match="swapped_pair_copies is true or false, got 'yes'"):
        convert(MRPC, {"format": "mrpc", "swapped_pair_copies": "yes"}, Ledger("t"))
