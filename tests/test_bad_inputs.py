"""A corpus of bad inputs, run through the real convert step: each gives a clear error or quarantined records.

tests/bad_inputs/<format>/<case>/ holds the raw files a reader would see and expect.json:
{"outcome": "rejected" | "error", "reason": <substring>, "read": N, "rejected": N}. Any exception other
than StageError (a traceback for the user) fails the test, and so does a record that is neither written
nor rejected. The 50 MB line is made at test time (it must not sit in git).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tunepipe.errors import StageError
from tunepipe.ledger import Ledger
from tunepipe.conversion import convert
from tests.conftest import BAD_INPUTS as CORPUS
from tests.conftest import REPO, bad_input

CASES = sorted(f"{fmt.name}/{case.name}" for fmt in CORPUS.iterdir() for case in fmt.iterdir() if case.is_dir())


def test_corpus_is_large_and_covers_every_format():
    from tunepipe.formats import READERS

    assert len(CASES) >= 25
    assert {case.split("/")[0] for case in CASES} == set(READERS)
    for case in CASES:  # small enough for git: large inputs are made at test time
        assert sum(p.stat().st_size for p in (CORPUS / case).rglob("*") if p.is_file()) < 20_000, case


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_a_clear_error_or_quarantined(case, tmp_path):
    fmt = case.split("/")[0]
    expect = json.loads((CORPUS / case / "expect.json").read_text(encoding="utf-8"))
    ledger = Ledger(case)
    raw = bad_input(case, tmp_path)
    if expect["outcome"] == "error":
        with pytest.raises(StageError, match=re.escape(expect["reason"])) as error:
            convert(raw, {"format": fmt}, ledger)
        assert "\n" not in str(error.value)  # one line
        return
    by_split = convert(raw, {"format": fmt}, ledger)
    ledger.check(max_reject_rate=1.0)  # balances: nothing silently missing
    assert (ledger.read, len(ledger.rejected)) == (expect["read"], expect["rejected"])
    assert sum(len(rows) for rows in by_split.values()) == ledger.read - len(ledger.rejected) - len(ledger.dropped)
    for rejected in ledger.rejected:
        assert expect["reason"] in rejected["reason"]
        assert rejected["where"] and rejected["record"] is not None  # names its place and keeps the record


@pytest.mark.parametrize("fmt, name", [("dialogsum", "dialogsum.train.jsonl"), ("collins", "collins.train.jsonl")])
def test_a_50_mb_line_is_quarantined_trimmed_and_the_rest_kept(fmt, name, tmp_path):
    raw = bad_input(f"{fmt}/utf8_bom", tmp_path)
    source = next(raw.iterdir())
    line = len(source.read_bytes().splitlines()) + 1
    with open(source, "ab") as handle:
        handle.write(b'{"broken": "' + b"x" * (50 * 1024 * 1024) + b"\n")
    source.rename(raw / name)
    ledger = Ledger(fmt)
    good_rows = line - 1
    by_split = convert(raw, {"format": fmt}, ledger)
    ledger.check(max_reject_rate=1.0)
    [rejected] = ledger.rejected
    assert rejected["reason"].startswith("malformed JSON") and rejected["where"] == f"{name}:{line}"
    assert rejected["truncated_from_chars"] > 50 * 1024 * 1024  # says what it cut
    assert len(json.dumps(rejected)) < 200_000  # the rejects file keeps the start of the line, not 50 MB
    assert sum(len(rows) for rows in by_split.values()) == good_rows


def test_the_stage_itself_prints_one_line_and_keeps_the_rejects(tmp_path):
    """Through `python -m stages.convert`: the limit fails with a readable line, and the rejects are written."""
    work = tmp_path / "work"
    shutil.copytree(CORPUS / "dialogsum" / "truncated_json", work / "data/raw/demo", ignore=shutil.ignore_patterns("expect.json"))
    (work / "params.yaml").write_text("datasets:\n  demo: {format: dialogsum, max_reject_rate: 0.01}\n")
    env = {"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent)}
    failed = subprocess.run([sys.executable, "-m", "stages.convert", "demo"], cwd=work, env=env, capture_output=True, text=True)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert failed.stderr.strip() == ("error: convert demo: 50.0% of records rejected (limit 1.0%); first: "
                                     "cases.train.jsonl:2: malformed JSON: Unterminated string starting at "
                                     "(column 22)")
    (work / "params.yaml").write_text("datasets:\n  demo: {format: dialogsum, max_reject_rate: 0.5}\n")
    passed = subprocess.run([sys.executable, "-m", "stages.convert", "demo"], cwd=work, env=env, capture_output=True, text=True)
    assert passed.returncode == 0, passed.stderr
    [kept] = [json.loads(line) for line in (work / "data/rejected/demo.jsonl").read_text().splitlines()]
    assert kept["where"] == "cases.train.jsonl:2" and kept["record"].startswith('{"fname": "train_2"')
    ledger = json.loads((work / "reports/ledger/demo.json").read_text())
    assert (ledger["read"], ledger["written"], ledger["rejected"]) == (2, 1, 1)


def test_a_split_the_reader_draws_itself_is_never_topped_up(tmp_path):
    """PhraseBank draws its test rows from a stricter agreement level; convert must not add others to them."""
    raw = bad_input("phrasebank/unknown_label", tmp_path)
    with pytest.raises(StageError, match="draws the test split itself; remove 'test'"):
        convert(raw, {"format": "phrasebank", "split": {"train": 0.8, "test": 0.2}}, Ledger("p"))
    by_split = convert(raw, {"format": "phrasebank", "options": {"test_fraction": 0.0}}, Ledger("p"))
    assert by_split["test"] == [] and by_split["train"]  # default ratios leave the reader's own split alone
