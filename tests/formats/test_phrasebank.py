"""Financial PhraseBank reader: parsing, ids, the test-split leak rule, reject reasons, the real files."""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest

from tunepipe.errors import StageError
from tunepipe.ledger import Ledger
from tunepipe.formats.phrasebank import read
from tests.conftest import REPO, shared_file

LEVELS = ("50Agree", "66Agree", "75Agree", "AllAgree")


def run(raw_dir: Path, options: dict | None = None) -> tuple[list[dict], Ledger]:
    ledger = Ledger("test")
    return list(read(raw_dir, options or {}, ledger)), ledger


def write(folder: Path, files: dict[str, list[str]], final_newline: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for level, lines in files.items():
        body = "\n".join(lines) + ("\n" if final_newline else "")
        (folder / f"Sentences_{level}.txt").write_bytes(body.encode("latin-1"))
    return folder


def sha12(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def test_parses_latin1_last_at_crlf_and_no_final_newline(tmp_path):
    (tmp_path / "Sentences_50Agree.txt").write_bytes(
        b"Write to ir@firm.example for details .@neutral\r\nCaf\xe9 sales rose .@positive")  # \xe9: latin-1 é
    records, ledger = run(tmp_path, {"test_fraction": 0.0})
    assert records == [
        {"id": sha12("Write to ir@firm.example for details ."),
         "group": sha12("Write to ir@firm.example for details ."), "kind": "labelled",
         "text": "Write to ir@firm.example for details .", "label": "neutral"},
        {"id": sha12("Café sales rose ."), "group": sha12("Café sales rose ."), "kind": "labelled",
         "text": "Café sales rose .", "label": "positive"},
    ]
    assert records[1]["id"] == "e2d7bb9ea054"  # sha256 of the UTF-8 text, first 12 hex digits: stable
    assert (ledger.read, ledger.rejected) == (2, [])


# The leak rule, by hand. stable_fraction(text, "phrasebank-test") of each sentence (sha256, checked in
# test_fractions_used_below): A .613  B .248  C .037  D .614  E .557  F .568
A, B, C, D, E, F = ("Sales rose .", "Profit fell .", "The plant is in Oulu .", "Orders grew .", "Costs rose .",
                    "The CEO left .")
FRACTION = {A: 0.613, B: 0.248, C: 0.037, D: 0.614, E: 0.557, F: 0.568}


def test_fractions_used_below():
    for text, value in FRACTION.items():
        digest = hashlib.sha256(f"phrasebank-test\x00{text}".encode("utf-8")).digest()
        assert int.from_bytes(digest[:8], "big") / 2**64 == pytest.approx(value, abs=0.0005)


@pytest.fixture
def nested(tmp_path) -> Path:
    # 66Agree is a subset of 50Agree, as in the release; B appears twice in 50Agree with two labels
    return write(tmp_path, {
        "50Agree": [f"{A}@positive", f"{B}@negative", f"{C}@neutral", f"{D}@positive", f"{E}@negative",
                    f"{F}@neutral", f"{B}@neutral"],
        "66Agree": [f"{B}@negative", f"{D}@positive", f"{E}@negative", f"{F}@neutral"],
    })


def test_test_split_is_drawn_from_test_level_and_removed_from_train(nested):
    records, ledger = run(nested, {"test_level": "66Agree", "test_fraction": 0.6})
    # in 66Agree and under 0.6: B, E, F. C is under 0.6 but only in 50Agree; D is in 66Agree but at .614
    assert {r["text"] for r in records if r.get("split") == "test"} == {B, E, F}
    assert {r["text"] for r in records if "split" not in r} == {A, C, D}
    assert [(r["id"], r["label"], r.get("split")) for r in records if r["text"] == B] == [
        (sha12(B), "negative", "test"), (sha12(B) + "-2", "neutral", "test")]  # both copies on one side
    assert ledger.read == 7 and not ledger.rejected


def test_fraction_one_takes_exactly_the_test_level_sentences(nested):
    records, _ = run(nested, {"test_level": "66Agree", "test_fraction": 1.0})
    assert sorted(r["text"] for r in records if r.get("split") == "test") == sorted([B, B, D, E, F])
    assert sorted(r["text"] for r in records if "split" not in r) == sorted([A, C])


def test_fraction_zero_and_default_level(nested):
    records, _ = run(nested, {"test_fraction": 0.0})
    assert not any("split" in r for r in records)
    records, _ = run(nested, {"test_fraction": 0.5})  # test_level defaults to level (50Agree)
    assert {r["text"] for r in records if r.get("split") == "test"} == {B, C}


def test_level_option_picks_the_file(nested):
    records, _ = run(nested, {"level": "66Agree", "test_fraction": 0.0})
    assert [r["text"] for r in records] == [B, D, E, F]


@pytest.mark.parametrize("options, message", [
    ({"level": "90Agree"}, "unknown level"),
    ({"test_level": "75Agree"}, "no *_75Agree.txt such as Sentences_75Agree.txt"),
    ({"test_fraction": 1.5}, "test_fraction must be a number from 0 to 1"),
    ({"test_fraction": "a lot"}, "test_fraction must be a number from 0 to 1"),
    ({"levl": "50Agree"}, "unknown options"),
    ({"encoding": "klingon"}, "unknown encoding"),
])
def test_bad_options(nested, options, message):
    with pytest.raises(StageError, match=re.escape(message)):
        run(nested, options)


def test_utf8_file_with_encoding_option(tmp_path):
    (tmp_path / "Sentences_50Agree.txt").write_bytes(b"\xef\xbb\xbfCaf\xc3\xa9 sales rose .@positive\n")
    records, ledger = run(tmp_path, {"encoding": "utf-8"})
    assert [r["text"] for r in records] == ["Café sales rose ."] and not ledger.rejected
    (tmp_path / "Sentences_50Agree.txt").write_bytes(b"Caf\xe9 sales rose .@positive\n")  # latin-1 bytes
    records, ledger = run(tmp_path, {"encoding": "utf-8"})
    assert records == [] and ledger.rejected[0]["reason"].startswith("wrong encoding: not utf-8")
    (tmp_path / "Sentences_50Agree.txt").write_bytes(b"Caf\xc3\xa9 sales rose .@positive\n")  # UTF-8 bytes
    records, ledger = run(tmp_path, {"encoding": "ISO-8859-1"})  # another name for latin-1: same check
    assert records == [] and ledger.rejected[0]["reason"] == "wrong encoding: UTF-8 text in a latin-1 file"


def test_samples_nested_and_clean():
    folder = REPO / "data" / "samples" / "phrasebank"
    texts = {}
    for level in LEVELS:
        records, ledger = run(folder, {"level": level})
        assert not ledger.rejected
        texts[level] = {r["text"] for r in records}
    assert texts["AllAgree"] < texts["75Agree"] < texts["66Agree"] < texts["50Agree"]
    assert 40 <= len(texts["50Agree"]) <= 60
    assert not (folder / "sample_AllAgree.txt").read_bytes().endswith(b"\n")  # like the release


# --- real data -------------------------------------------------------------------------------------------

def raw_label_counts(path: Path) -> Counter:
    """Count labels straight from the bytes, without the reader."""
    lines = [line for line in path.read_bytes().split(b"\n") if line.strip()]
    return Counter(line.rstrip(b"\r").rsplit(b"@", 1)[1].decode("ascii") for line in lines)


def test_real_50agree_keeps_every_sentence_and_label():
    path = shared_file("financial_phrasebank/Sentences_50Agree.txt")
    records, ledger = run(path.parent)
    assert len(records) == ledger.read == 4_846 and not ledger.rejected
    assert Counter(r["label"] for r in records) == raw_label_counts(path)
    assert raw_label_counts(path) == {"neutral": 2879, "positive": 1363, "negative": 604}
    assert len({r["id"] for r in records}) == 4_846  # 8 repeated sentences get "-2" ids
    assert sum(r["id"].endswith("-2") for r in records) == 8
    assert any("é" in r["text"] or "ä" in r["text"] for r in records)  # decoded as latin-1


@pytest.mark.parametrize("test_level", ["66Agree", "AllAgree"])
def test_real_test_split_does_not_leak(test_level):
    path = shared_file(f"financial_phrasebank/Sentences_{test_level}.txt")
    records, ledger = run(path.parent, {"test_level": test_level, "test_fraction": 0.2})
    test = [r for r in records if r.get("split") == "test"]
    rest = {r["text"] for r in records if "split" not in r}
    level_texts = {line.rsplit("@", 1)[0].strip() for line in path.read_bytes().decode("latin-1").splitlines()}
    assert ledger.read == 4_846 and not ledger.rejected
    assert test and not {r["text"] for r in test} & rest
    assert {r["text"] for r in test} <= level_texts
    assert 0.15 < len({r["text"] for r in test}) / len(level_texts) < 0.25
