"""Collins reader: hand-checked rows from ex_id and from separate fields, the word check, every reject reason."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tunepipe.conversion import convert
from tunepipe.errors import StageError
from tunepipe.ledger import Ledger
from tunepipe.formats import READERS
from tunepipe.formats.collins import read
from tests.conftest import REPO


def lines(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)


def write(folder: Path, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return folder


def run(raw_dir: Path, options: dict | None = None) -> tuple[list[dict], Ledger]:
    ledger = Ledger("test")
    return list(read(raw_dir, options or {}, ledger)), ledger


def one(tmp_path: Path, *rows, options: dict | None = None) -> tuple[list[dict], Ledger]:
    return run(write(tmp_path / "raw", {"collins_words.jsonl": lines(*rows)}), options)


BANK = {"id": 7, "data_name": "collins", "ex_id": "bank!@!N-COUNT!@!2!@!We sat on the bank of the river.",
        "question": "this raw question is not used", "answer": "the land along the side of a river"}


def test_ex_id_row_exact(tmp_path):
    records, ledger = one(tmp_path, BANK)
    assert records == [{
        "id": "7", "kind": "instruction",
        "instruction": '"We sat on the bank of the river." What does the word "bank" mean in this context?',
        "input": "", "output": "the land along the side of a river", "word": "bank", "pos": "N-COUNT",
        "sense": "2", "word_in_context": True, "data_name": "collins"}]
    assert (ledger.read, ledger.rejected) == (1, [])


def test_separate_fields_give_the_same_row(tmp_path):
    records, _ = one(tmp_path,
                     {"id": "w1", "word": " well ", "context": "She sings well.", "answer": "in a skilful way"},
                     {"id": "w2", "word": "well", "example": "They dug a well.", "pos": "N-COUNT", "sense": 2,
                      "answer": "a deep hole for water"})
    assert [(r["id"], r["instruction"], r["pos"], r["sense"], r["data_name"]) for r in records] == [
        ("w1", '"She sings well." What does the word "well" mean in this context?', "", "", None),
        ("w2", '"They dug a well." What does the word "well" mean in this context?', "N-COUNT", "2", None)]


def test_ex_id_wins_over_separate_fields(tmp_path):
    records, _ = one(tmp_path, {**BANK, "word": "river", "context": "Another sentence."})
    assert records[0]["word"] == "bank"
    assert records[0]["instruction"].startswith('"We sat on the bank of the river." What does the word "bank"')


def test_quotes_in_the_context_are_kept_verbatim(tmp_path):
    row = {**BANK, "ex_id": 'bright!@!ADJ!@!1!@!"What a bright day," she said.', "answer": "full of light"}
    records, _ = one(tmp_path, row)
    assert records[0]["instruction"] == ('""What a bright day," she said." '
                                         'What does the word "bright" mean in this context?')


@pytest.mark.parametrize("word, context, found", [
    ("bank", "The Bank opened at nine.", True),       # case-insensitive
    ("run", "She ran for the bus.", False),            # inflected form: kept, flagged
    ("art", "We start at noon.", False),               # whole words only
    ("run out", "We have run out of milk.", True),     # several words
    ("light", "Light the candle.", True),              # at the start of the sentence
])
def test_word_in_context_is_flagged_not_rejected(tmp_path, word, context, found):
    records, ledger = one(tmp_path, {"id": 1, "ex_id": f"{word}!@!X!@!1!@!{context}", "answer": "a sense"})
    assert (records[0]["word_in_context"], ledger.rejected) == (found, [])


def test_require_word_in_context_rejects_instead(tmp_path):
    rows = [{"id": 1, "ex_id": "run!@!VERB!@!1!@!She ran for the bus.", "answer": "to move fast"},
            {"id": 2, "ex_id": "run!@!VERB!@!1!@!They run every day.", "answer": "to move fast"}]
    records, ledger = one(tmp_path, *rows, options={"require_word_in_context": True})
    assert [r["id"] for r in records] == ["2"]
    assert [(r["where"], r["reason"]) for r in ledger.rejected] == [
        ("collins_words.jsonl:1", "word not in context: 'run' (require_word_in_context is on)")]


def test_instruction_template_option(tmp_path):
    records, _ = one(tmp_path, BANK, options={"instruction_template": "Define {word}: {context}"})
    assert records[0]["instruction"] == "Define bank: We sat on the bank of the river."


@pytest.mark.parametrize("options, message", [
    ({"require_word": True}, "unknown ['require_word']"),
    ({"instruction_template": "{sentence}"}, "instruction_template may use only"),
    ({"require_word_in_context": "yes"}, "require_word_in_context must be true or false"),
])
def test_bad_options_stop_before_reading(tmp_path, options, message):
    with pytest.raises(StageError, match=re.escape(message)):
        one(tmp_path, BANK, options=options)


def test_split_from_file_name_and_crlf_bom(tmp_path):
    raw = write(tmp_path / "raw", {
        "collins.dev.jsonl": b"\xef\xbb\xbf" + lines(BANK).replace("\n", "\r\n").encode("utf-8"),
        "collins.train.jsonl": lines({**BANK, "id": 8}), "words.jsonl": lines({**BANK, "id": 9})})
    records, ledger = run(raw)
    assert {r["id"]: r.get("split") for r in records} == {"7": "validation", "8": "train", "9": None}
    assert ledger.rejected == []


def test_each_reject_reason_names_its_line(tmp_path):
    records, ledger = one(
        tmp_path, BANK, {**BANK, "id": 8, "ex_id": "bank!@!N!@!The bank."}, {**BANK, "id": 9, "answer": None},
        {**BANK, "id": 10, "answer": ""}, {**BANK, "id": [1]}, "{not json", {**BANK, "id": "7"})
    assert [r["id"] for r in records] == ["7"]
    assert [(r["where"], r["reason"]) for r in ledger.rejected] == [
        ("collins_words.jsonl:2", "malformed ex_id: expected word!@!pos!@!sense!@!example, got 3 parts"),
        ("collins_words.jsonl:3", "missing field: answer"),
        ("collins_words.jsonl:4", "empty text: answer"),
        ("collins_words.jsonl:5", "wrong type: id is list, expected a string or an integer"),
        ("collins_words.jsonl:6", "malformed JSON: Expecting property name enclosed in double quotes (column 2)"),
        ("collins_words.jsonl:7", "duplicate id: 7 seen before")]
    assert ledger.read == 7


def test_no_files_is_an_error(tmp_path):
    with pytest.raises(StageError, match="no Collins .jsonl files"):
        run(write(tmp_path / "raw", {"notes.txt": "x"}))


def test_sample_data_reads_clean_and_converts(monkeypatch):
    records, ledger = run(REPO / "data" / "samples" / "collins")
    assert (len(records), ledger.rejected) == (40, [])
    assert len({r["id"] for r in records}) == 40
    # banked, brighter, ran, sprang, pitched: inflected forms, kept and flagged
    assert sorted((int(r["id"]), r["word"]) for r in records if not r["word_in_context"]) == [
        (4, "bank"), (8, "bright"), (12, "run"), (25, "spring"), (37, "pitch")]
    assert {r["word"] for r in records} >= {"bank", "bright", "run", "well", "present"}
    monkeypatch.setitem(READERS, "collins", "tunepipe.formats.collins")
    ledger = Ledger("convert collins")
    convert(REPO / "data" / "samples" / "collins", {"format": "collins"}, ledger)
    ledger.check(max_reject_rate=0.01)
    assert ledger.summary()["written"] == 40
