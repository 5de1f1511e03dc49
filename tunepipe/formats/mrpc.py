"""GLUE MRPC: the original msr_paraphrase_{train,test}.txt or the GLUE train.tsv / dev.tsv.

Both are tab-separated with the header `Quality  #1 ID  #2 ID  #1 String  #2 String` (the original has a
UTF-8 BOM and CRLF line ends; GLUE copies may lack the BOM). Lines are split on TAB only, never with csv
quoting: 854 pairs of the original train file contain `"`, and a csv reader silently merges lines
there (it reads 3,963 rows instead of 4,076).

Options:
- source: "auto" (default), "original" or "glue". A GLUE download holds both the original files and the
  GLUE tsv, which are the same pairs; reading both would double every pair. auto reads the original files
  when any msr_paraphrase_*.txt is present (they carry the labelled test set; GLUE's test.tsv has no
  labels), else the GLUE tsv.

Records: kind "labelled", text (#1 String), text_pair (#2 String), id "<#1 ID>-<#2 ID>", label
"equivalent" / "not_equivalent" (Quality 1 / 0; LABELS lists them in GLUE's integer order), split from
the file name: *train* -> train, dev -> validation, *test* -> test. With the original train file, the
pairs listed in a dev_ids.tsv anywhere under the folder go to validation, exactly as GLUE carves dev out
of train; without one, train has no validation part (the release fixes train/test only). GLUE's unlabelled
test.tsv (header `index ...`) is skipped: a labelled record needs a label.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from tunepipe.errors import StageError
from tunepipe.ledger import Ledger

HEADER = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
OPTIONS = {"source": "auto"}  # original (the raw release) or glue (its tab-separated copy); auto: original if present
LABELS = ["not_equivalent", "equivalent"]
# the release's msr_paraphrase_<split>.txt, or any <prefix>paraphrase_<split>.txt (copies, samples)
ORIGINAL = {"paraphrase_train.txt": "train", "paraphrase_test.txt": "test"}
GLUE = {"train.tsv": "train", "dev.tsv": "validation", "test.tsv": "test"}
SOURCES = ("auto", "original", "glue")
BOM = b"\xef\xbb\xbf"


def original_split(path: Path) -> str | None:
    return next((split for suffix, split in ORIGINAL.items() if path.name.endswith(suffix)), None)


def dev_ids(raw_dir: Path) -> set[str]:
    """Pair ids `<#1>-<#2>` from dev_ids.tsv (two ids per line); a malformed list is a StageError."""
    found = sorted(Path(raw_dir).rglob("dev_ids.tsv"))
    if len(found) > 1:
        raise StageError(f"{raw_dir}: dev_ids.tsv found {len(found)} times; keep one")
    ids = set()
    for path in found:
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                raise StageError(f"{path}:{number}: expected two numeric ids, got {line[:80]!r}")
            ids.add(f"{parts[0]}-{parts[1]}")
    return ids


def to_record(fields: list[str], split: str) -> dict[str, Any]:
    if len(fields) != len(HEADER):
        raise ValueError(f"wrong field count: {len(fields)} tab-separated fields, expected {len(HEADER)}")
    quality, id1, id2, text, pair = (f.strip() for f in fields)
    if quality not in ("0", "1"):
        raise ValueError(f"unknown label: Quality {quality[:20]!r} (expected 0 or 1)")
    if not (id1.isdigit() and id2.isdigit()):
        raise ValueError(f"bad id: {id1[:20]!r}, {id2[:20]!r} (expected numbers)")
    if not text or not pair:
        raise ValueError("empty sentence: #1 String" if not text else "empty sentence: #2 String")
    return {"id": f"{id1}-{id2}", "kind": "labelled", "text": text, "text_pair": pair,
            "label": LABELS[int(quality)], "split": split}


def read_file(path: Path, split: str, validation: set[str], ledger: Ledger) -> Iterator[dict[str, Any]]:
    data = path.read_bytes()
    data = data[len(BOM):] if data.startswith(BOM) else data
    if not data.strip():
        raise StageError(f"{path}: empty file (not even the MRPC header)")
    rows = data.split(b"\n")
    try:
        header = rows[0].rstrip(b"\r").decode("utf-8").split("\t")
    except UnicodeDecodeError:
        header = []
    if path.name == "test.tsv" and header[:1] == ["index"]:
        return  # GLUE's unlabelled test set: nothing to learn from
    if [h.strip() for h in header] != HEADER:
        raise StageError(f"{path}: first line is not the MRPC header {' / '.join(HEADER)} "
                         f"(got {rows[0][:80].decode('utf-8', 'replace')!r})")
    for number, raw in enumerate(rows[1:], start=2):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        ledger.read += 1
        where = f"{path.name}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            ledger.reject(where, f"wrong encoding: not UTF-8 at byte {err.start}", raw.decode("latin-1"))
            continue
        try:
            record = to_record(line.split("\t"), split)
        except ValueError as err:
            ledger.reject(where, str(err), line)
            continue
        if split == "train" and record["id"] in validation:
            record["split"] = "validation"
        yield record


def read(raw_dir: Path, options: dict[str, Any], ledger: Ledger) -> Iterator[dict[str, Any]]:
    if set(options) - {"source"}:
        raise StageError(f"mrpc: unknown options {sorted(set(options) - {'source'})} (known: source)")
    source = options.get("source") or "auto"
    if source not in SOURCES:
        raise StageError(f"mrpc: unknown source {source!r} (use {', '.join(SOURCES)})")
    files = sorted(p for p in Path(raw_dir).rglob("*") if p.is_file())
    original = [p for p in files if original_split(p)]
    glue = [p for p in files if p.name in GLUE]
    if source == "auto":
        source = "original" if original else "glue"
        expected = [f"*{name}" for name in ORIGINAL] + list(GLUE)
    else:
        expected = [f"*{name}" for name in ORIGINAL] if source == "original" else list(GLUE)
    chosen = original if source == "original" else glue
    if not chosen:
        raise StageError(f"{raw_dir}: no MRPC files (expected {', '.join(expected)})")
    validation = dev_ids(raw_dir) if source == "original" else set()
    before = ledger.read
    for path in chosen:
        yield from read_file(path, original_split(path) or GLUE[path.name], validation, ledger)
    if ledger.read == before:
        raise StageError(f"{raw_dir}: the MRPC files hold no sentence pairs")
