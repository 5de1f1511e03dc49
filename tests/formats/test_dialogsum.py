"""DialogSum reader: both releases, multi-reference test rows, every bad record kept with its reason."""
from __future__ import annotations

import json

from tunepipe.ledger import Ledger
from tunepipe.formats.dialogsum import INSTRUCTION, read
from tests.conftest import shared_file


def run(folder):
    ledger = Ledger("t")
    return list(read(folder, {}, ledger)), ledger


def test_json_lines_and_python_dict_release_give_the_same_record(tmp_path):
    row = {"fname": "train_1", "dialogue": "#Person1#: Hi.\n#Person2#: Hello.", "summary": "They greet.", "topic": "greeting"}
    (tmp_path / "dialogsum.train.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "dialogsum.train.2021-05.pydict.jsonl").write_text(repr(row) + "\n")  # single quotes
    records, ledger = run(tmp_path)
    expected = {"id": "train_1", "kind": "instruction", "instruction": INSTRUCTION,
                "input": "#Person1#: Hi.\n#Person2#: Hello.", "output": "They greet.", "split": "train"}
    assert records == [expected, expected]
    assert ledger.read == 2 and not ledger.rejected


def test_test_rows_keep_all_three_references_and_dev_is_validation(tmp_path):
    test_row = {"fname": "test_0", "dialogue": "#Person1#: Hi.", "summary1": "A.", "summary2": "B.", "summary3": "C."}
    (tmp_path / "dialogsum.test.jsonl").write_text(json.dumps(test_row) + "\n")
    (tmp_path / "dialogsum.dev.jsonl").write_text(json.dumps({"fname": "dev_0", "dialogue": "x", "summary": "y"}) + "\n")
    records, _ = run(tmp_path)
    by_id = {r["id"]: r for r in records}
    assert by_id["test_0"]["references"] == ["A.", "B.", "C."] and by_id["test_0"]["output"] == "A."
    assert by_id["test_0"]["split"] == "test" and by_id["dev_0"]["split"] == "validation"


def test_bad_records_are_rejected_with_line_and_reason_and_code_is_never_run(tmp_path):
    lines = [
        json.dumps({"fname": "ok", "dialogue": "d", "summary": "s"}),
        '{"fname": "cut", "dialogue": "d", "summ',                      # truncated
        json.dumps({"fname": "nosum", "dialogue": "d"}),
        json.dumps({"fname": "empty", "dialogue": "  ", "summary": "s"}),
        "{'fname': __import__('os').system('echo owned'), 'dialogue': 'd', 'summary': 's'}",
        json.dumps(["not", "an", "object"]),
    ]
    path = tmp_path / "dialogsum.train.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"fname": "latin", "dialogue": "caf\xe9", "summary": "s"}\n')
    records, ledger = run(tmp_path)
    assert [r["id"] for r in records] == ["ok"]
    reasons = {r["where"]: r["reason"] for r in ledger.rejected}
    assert reasons["dialogsum.train.jsonl:2"].startswith("malformed JSON")
    assert reasons["dialogsum.train.jsonl:3"] == "missing field: summary"
    assert reasons["dialogsum.train.jsonl:4"] == "empty text: dialogue"
    assert reasons["dialogsum.train.jsonl:5"].startswith("malformed JSON")  # not evaluated
    assert reasons["dialogsum.train.jsonl:6"].startswith("malformed record")
    assert reasons["dialogsum.train.jsonl:7"].startswith("wrong encoding")
    assert ledger.read == 7 == len(records) + len(ledger.rejected)


def test_real_2021_train_release_converts_every_row():
    source = shared_file("dialogsum/dialogsum.train.2021-05.pydict.jsonl")
    records, ledger = run(source.parent)
    train = [r for r in records if r["split"] == "train"]
    assert len(train) == 12460 and ledger.summary()["rejected"] == 0
    assert len([r for r in records if r["split"] == "validation"]) == 500
