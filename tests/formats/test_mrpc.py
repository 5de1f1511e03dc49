"""MRPC reader: exact records, quotes, original vs GLUE files, dev_ids, reject reasons, the real files."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tunepipe.errors import StageError
from tunepipe.ledger import Ledger
from tunepipe.formats.mrpc import LABELS, read
from tests.conftest import REPO, shared_file

HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
BOM = b"\xef\xbb\xbf"


def run(raw_dir: Path, options: dict | None = None) -> tuple[list[dict], Ledger]:
    ledger = Ledger("test")
    return list(read(raw_dir, options or {}, ledger)), ledger


def table(*rows: str, bom: bool = True, newline: str = "\r\n") -> bytes:
    return (BOM if bom else b"") + newline.join([HEADER, *rows, ""]).encode("utf-8")


ROW_QUOTES = '1\t702\t705\tHe said "we will win, no doubt.\tHe was sure "we will win".'
ROW_PLAIN = "0\t810\t812\tThe bank cut rates.\tThe bank opened a branch in Oslo."


def test_exact_record_with_unbalanced_quotes(tmp_path):
    # an unbalanced " would make a csv reader swallow the next line into this field
    (tmp_path / "msr_paraphrase_train.txt").write_bytes(table(ROW_QUOTES, ROW_PLAIN))
    records, ledger = run(tmp_path)
    assert records == [
        {"id": "702-705", "kind": "labelled", "text": 'He said "we will win, no doubt.',
         "text_pair": 'He was sure "we will win".', "label": "equivalent", "split": "train"},
        {"id": "810-812", "kind": "labelled", "text": "The bank cut rates.",
         "text_pair": "The bank opened a branch in Oslo.", "label": "not_equivalent", "split": "train"},
    ]
    assert (ledger.read, ledger.rejected) == (2, [])
    assert LABELS == ["not_equivalent", "equivalent"]  # index = GLUE's integer label


def test_dev_ids_carve_validation_out_of_original_train(tmp_path):
    (tmp_path / "msr_paraphrase_train.txt").write_bytes(table(ROW_QUOTES, ROW_PLAIN))
    (tmp_path / "msr_paraphrase_test.txt").write_bytes(table("1\t900\t901\tA.\tB."))
    (tmp_path / "glue" / "dev_ids.tsv").parent.mkdir()
    (tmp_path / "glue" / "dev_ids.tsv").write_text("810\t812\n")
    records, _ = run(tmp_path)
    assert {r["id"]: r["split"] for r in records} == {"702-705": "train", "810-812": "validation", "900-901": "test"}


def test_auto_prefers_original_files_and_glue_option(tmp_path):
    # a GLUE download holds both: reading both would double every pair
    (tmp_path / "msr_paraphrase_train.txt").write_bytes(table(ROW_QUOTES, ROW_PLAIN))
    (tmp_path / "train.tsv").write_bytes(table(ROW_QUOTES, bom=False, newline="\n"))
    (tmp_path / "dev.tsv").write_bytes(table(ROW_PLAIN, bom=False, newline="\n"))
    (tmp_path / "test.tsv").write_text("index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1\t2\tA.\tB.\n")
    records, _ = run(tmp_path)
    assert [(r["id"], r["split"]) for r in records] == [("702-705", "train"), ("810-812", "train")]
    records, ledger = run(tmp_path, {"source": "glue"})
    assert [(r["id"], r["split"]) for r in records] == [("810-812", "validation"), ("702-705", "train")]
    assert ledger.read == 2  # GLUE's unlabelled test.tsv is skipped
    with pytest.raises(StageError, match="unknown source"):
        run(tmp_path, {"source": "hf"})
    with pytest.raises(StageError, match="unknown options"):
        run(tmp_path, {"sorce": "glue"})


def test_samples_read_clean():
    records, ledger = run(REPO / "data" / "samples" / "mrpc")
    assert 40 <= len(records) <= 60 and not ledger.rejected
    assert set(Counter(r["split"] for r in records)) == {"train", "validation", "test"}


# --- real data -------------------------------------------------------------------------------------------

def test_real_original_train(tmp_path):
    path = shared_file("mrpc/msr_paraphrase_train.txt")
    (tmp_path / path.name).symlink_to(path)  # the file alone, without the GLUE folder's dev_ids.tsv
    records, ledger = run(tmp_path)
    assert len(records) == ledger.read == 4_076 and not ledger.rejected
    assert Counter(r["split"] for r in records) == {"train": 4_076}
    first = path.read_bytes().split(b"\r\n")[1].decode("utf-8").split("\t")
    assert records[0] == {"id": f"{first[1]}-{first[2]}", "kind": "labelled", "text": first[3],
                          "text_pair": first[4], "label": LABELS[int(first[0])], "split": "train"}
    assert sum('"' in r["text"] + r["text_pair"] for r in records) == 854  # quotes kept, no line merged


def test_real_glue_train_and_dev():
    folder = shared_file("mrpc/glue_format/train.tsv").parent
    records, ledger = run(folder)
    assert Counter(r["split"] for r in records) == {"train": 3_668, "validation": 408}
    assert ledger.read == 4_076 and not ledger.rejected
    dev_ids = {"-".join(line.split("\t")) for line in (folder / "dev_ids.tsv").read_text().splitlines()}
    assert {r["id"] for r in records if r["split"] == "validation"} == dev_ids


def test_real_original_with_dev_ids_equals_glue():
    folder = shared_file("mrpc/msr_paraphrase_train.txt").parent  # original at the top, glue_format/ below
    original, _ = run(folder)  # auto -> original file; dev_ids.tsv found in glue_format/
    glue, _ = run(folder, {"source": "glue"})
    assert sorted(original, key=lambda r: r["id"]) == sorted(glue, key=lambda r: r["id"])
