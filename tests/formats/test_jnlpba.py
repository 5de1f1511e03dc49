"""JNLPBA reader: hand-checked standoff and IOB2 conversions, every reject reason, the real data."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from tunepipe.errors import StageError
from tunepipe.ledger import Ledger
from tunepipe.formats.jnlpba import LABELS, read
from tests.conftest import REPO, shared_file


def run(raw_dir: Path, options: dict | None = None) -> tuple[list[dict], Ledger]:
    ledger = Ledger("test")
    return list(read(raw_dir, options or {}, ledger)), ledger


def write(folder: Path, files: dict[str, str | bytes]) -> Path:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return folder


def entities(tokens: list[str], tags: list[str]) -> list[tuple[str, str]]:
    """(type, tokens joined by spaces) for each B-/I- run: how a reader of our output sees entities."""
    found = []
    for token, tag in zip(tokens, tags):
        if tag.startswith("B-"):
            found.append([tag[2:], [token]])
        elif tag.startswith("I-"):
            found[-1][1].append(token)
    return [(kind, " ".join(words)) for kind, words in found]


def test_labels_are_the_fixed_order():
    assert LABELS == ["O", "B-DNA", "I-DNA", "B-RNA", "I-RNA", "B-cell_line", "I-cell_line",
                      "B-cell_type", "I-cell_type", "B-protein", "I-protein"]


# --- standoff, checked by hand -------------------------------------------------------------------------

def test_standoff_two_entities_one_multi_token(tmp_path):
    # offsets counted by hand: "IL-2 receptor" = 4..17, "T cells" = 31..38 (after the newline at 30)
    text = "The IL-2 receptor binds STAT5.\nT cells respond.\n"
    assert text[4:17] == "IL-2 receptor" and text[31:38] == "T cells"
    write(tmp_path, {"doc1.txt": text, "doc1.ann": "T1\tprotein 4 17\tIL-2 receptor\nT2\tcell_type 31 38\tT cells\n"})
    records, ledger = run(tmp_path)
    assert records == [
        {"id": "doc1:1", "group": "doc1", "kind": "tokens",
         "tokens": ["The", "IL", "-", "2", "receptor", "binds", "STAT5", "."],
         "tags": ["O", "B-protein", "I-protein", "I-protein", "I-protein", "O", "O", "O"]},
        {"id": "doc1:2", "group": "doc1", "kind": "tokens",
         "tokens": ["T", "cells", "respond", "."],
         "tags": ["B-cell_type", "I-cell_type", "O", "O"]},
    ]
    assert (ledger.read, ledger.rejected) == (2, [])


def test_token_is_cut_where_an_entity_starts_inside_it(tmp_path):
    # GENIA marks "p70" and "I kappa B" inside "p70I kappa B": two entities, not one
    write(tmp_path, {"d.txt": "p70I kappa B binds.", "d.ann": "T1\tprotein 0 3\tp70\nT2\tprotein 3 12\tI kappa B\n"})
    [record], _ = run(tmp_path)
    assert record["tokens"] == ["p70", "I", "kappa", "B", "binds", "."]
    assert record["tags"] == ["B-protein", "B-protein", "I-protein", "I-protein", "O", "O"]


def test_sentence_rules(tmp_path):
    # splits after ". " + capital and at newlines; not at "0.5", not before lower case
    write(tmp_path, {"d.txt": "Cells took 0.5 mM of e.g. zinc. Next came IL-4!\nTitle line", "d.ann": ""})
    records, _ = run(tmp_path)
    assert [" ".join(r["tokens"]) for r in records] == [
        "Cells took 0 . 5 mM of e . g . zinc .", "Next came IL - 4 !", "Title line"]
    assert [r["id"] for r in records] == ["d:1", "d:2", "d:3"]
    assert all(set(r["tags"]) == {"O"} for r in records)


def test_no_sentence_break_inside_an_entity(tmp_path):
    text = "We used C. Sub. Cells grew."
    write(tmp_path / "plain", {"d.txt": text, "d.ann": ""})
    assert len(run(tmp_path / "plain")[0]) == 3  # "We used C." / "Sub." / "Cells grew."
    write(tmp_path / "marked", {"d.txt": text, "d.ann": "T1\tprotein 8 15\tC. Sub.\n"})
    records, _ = run(tmp_path / "marked")
    assert [r["tokens"] for r in records] == [["We", "used", "C", ".", "Sub", "."], ["Cells", "grew", "."]]
    assert records[0]["tags"] == ["O", "O", "B-protein", "I-protein", "I-protein", "I-protein"]


def test_bad_entity_rejects_only_its_sentence(tmp_path):
    write(tmp_path, {"d.txt": "IL-2 is here. IL-4 is there.", "d.ann": "T1\tprotein 0 4\tIL-2\nT2\tprotein 14 18\tIL-5\n"})
    records, ledger = run(tmp_path)
    assert [r["id"] for r in records] == ["d:1"]
    assert ledger.rejected == [{"where": "d.ann:2", "reason": "offsets do not match the text: 'IL-4' != 'IL-5'",
                                "record": "IL-4 is there."}]


def test_other_brat_lines_are_ignored(tmp_path):
    ann = "T1\tprotein 0 4\tIL-2\nR1\tBinds Arg1:T1 Arg2:T1\n#1\tAnnotatorNotes T1\tchecked\nA1\tNegated T1\n"
    write(tmp_path, {"d.txt": "IL-2 binds.", "d.ann": ann})
    [record], ledger = run(tmp_path)
    assert record["tags"] == ["B-protein", "I-protein", "I-protein", "O", "O"] and not ledger.rejected


# --- IOB2 ------------------------------------------------------------------------------------------------

def test_iob2_markers_crlf_bom(tmp_path):
    data = "\ufeff###MEDLINE:1\r\n\r\nIL-2\tB-protein\r\nworks\tO\r\n\r\n###MEDLINE:2\r\nT\tB-cell_type\r\ncells\tI-cell_type\r\n"
    write(tmp_path, {"genia.iob2": data})
    records, ledger = run(tmp_path)
    assert records == [
        {"id": "genia:1", "kind": "tokens", "tokens": ["IL-2", "works"], "tags": ["B-protein", "O"]},
        {"id": "genia:2", "kind": "tokens", "tokens": ["T", "cells"], "tags": ["B-cell_type", "I-cell_type"]},
    ]
    assert ledger.read == 2  # markers are not records


def test_rejected_sentence_keeps_the_numbering(tmp_path):
    write(tmp_path, {"x.iob2": "a\tO\n\nb\tI-DNA\n\nc\tO\n"})
    records, ledger = run(tmp_path)
    assert [r["id"] for r in records] == ["x:1", "x:3"]
    assert ledger.rejected[0]["where"] == "x.iob2:3"


def test_txt_is_iob2_only_when_it_looks_like_it(tmp_path):
    write(tmp_path, {"README.txt": "These files are for the task.\n", "tags.txt": "IL-2\tB-protein\n", "x.raw": "IL-2\n"})
    records, ledger = run(tmp_path)
    assert [r["id"] for r in records] == ["tags:1"] and ledger.read == 1


def test_split_comes_from_folders_below_raw_dir_only(tmp_path):
    root = tmp_path / "test" / "raw"  # a parent named "test" must not matter
    write(root, {"train/a.iob2": "a\tO\n", "test/b.iob2": "b\tO\n", "devel/c.iob2": "c\tO\n"})
    records, _ = run(root)
    assert {r["id"]: r.get("split") for r in records} == {"a:1": None, "b:1": "test", "c:1": "validation"}


def test_the_release_file_names_fix_their_split(tmp_path):
    # a folder holding only the official test file: its sentences are the test split, not re-split by hash
    write(tmp_path, {"Genia4EReval1.iob2": "###MEDLINE:1\n\nIL-2\tB-protein\n\nIL-4\tB-protein\n",
                     "Genia4ERtask2.iob2": "a\tO\n", "sampletest1.iob2": "b\tO\n"})
    records, _ = run(tmp_path)
    assert {r["id"]: r.get("split") for r in records} == {
        "Genia4EReval1:1": "test", "Genia4EReval1:2": "test", "Genia4ERtask2:1": "train", "sampletest1:1": None}


def test_options_are_refused(tmp_path):
    write(tmp_path, {"a.iob2": "a\tO\n"})
    with pytest.raises(StageError, match="takes no options"):
        run(tmp_path, {"format": "iob2"})


def test_samples_read_clean():
    records, ledger = run(REPO / "data" / "samples" / "jnlpba")
    assert 40 <= len(records) <= 60 and not ledger.rejected
    assert {t for r in records for t in r["tags"]} == set(LABELS)


# --- real data -------------------------------------------------------------------------------------------

def test_real_standoff_train_has_every_entity():
    folder = shared_file("jnlpba/standoff/train")
    start = time.perf_counter()
    records, ledger = run(folder)
    seconds = time.perf_counter() - start
    assert seconds < 30, f"standoff conversion took {seconds:.1f} s"
    assert ledger.rejected == [] and ledger.read == len(records)
    assert sum(tag.startswith("B-") for r in records for tag in r["tags"]) == 51_301
    # independently: the entity texts of the .ann files (spaces dropped, since tokens drop them)
    expected = Counter()
    for ann in folder.glob("*.ann"):
        for line in ann.read_text(encoding="utf-8").splitlines():
            _, kind_span, text = line.split("\t")
            expected[(kind_span.split()[0], "".join(text.split()))] += 1
    got = Counter((kind, words.replace(" ", "")) for r in records for kind, words in entities(r["tokens"], r["tags"]))
    assert got == expected and sum(got.values()) == 51_301
    assert len({r["id"] for r in records}) == len(records)


def test_real_iob2_sample_matches_its_own_tags():
    path = shared_file("jnlpba/original-data/train/sampletest2.iob2")
    lines = path.read_text(encoding="utf-8").splitlines()
    data = [line.split("\t") for line in lines if line.strip() and not line.startswith("###")]
    records, ledger = run(path.parent)  # sampletest1 (no markers) + sampletest2 (markers)
    assert ledger.rejected == []
    by_file = {stem: [r for r in records if r["id"].startswith(stem + ":")] for stem in ("sampletest1", "sampletest2")}
    assert len(by_file["sampletest1"]) == len(by_file["sampletest2"]) == 105
    assert [t for r in by_file["sampletest2"] for t in r["tokens"]] == [d[0] for d in data]
    assert [t for r in by_file["sampletest2"] for t in r["tags"]] == [d[1] for d in data]
    # the two files are the same sentences; only the document markers differ
    assert [r["tags"] for r in by_file["sampletest1"]] == [r["tags"] for r in by_file["sampletest2"]]
