"""JNLPBA / BioNLP 2004 NER (GENIA): IOB2 column files or brat standoff (<pmid>.txt + <pmid>.ann).

The format is chosen per file: `*.iob2 / *.iob / *.conll / *.tsv` are IOB2 (token TAB tag, blank line
between sentences, `###MEDLINE:<pmid>` document markers); a `.txt` with a `.ann` beside it is standoff; a
`.txt` alone is IOB2 only when its first data line looks like `token<TAB>O|B-x|I-x` (so README.txt and the
tag-less `*.raw` test input are not data). One record per sentence, id `<file stem>:<n>` (n 1-based,
counted in the file or document, rejected sentences included, so ids stay put when a line is fixed).

Standoff details (decisions):
- Tokens: runs of letters/digits, every other non-space character alone (`Ro(SSA)` -> Ro ( SSA )), with
  character offsets. A token is also cut where an entity starts or ends inside it: GENIA marks `p70` and
  `I kappa B gamma` inside `p70I kappa B gamma`; tagging the whole token would merge two entities.
- Sentences end at a newline, or after . ! ? followed by spaces and a capital letter, but never inside an
  entity span (so no entity crosses a sentence). Abbreviations (`e.g. T cells`) split too: kept simple.
- Every entity must satisfy txt[start:end] == its text, else the sentence(s) it touches are rejected
  ("offsets do not match the text"). Offsets count characters of the UTF-8 text as brat does (a BOM is
  character 0). Overlapping or discontinuous entities cannot be written as IOB2: their sentences are
  rejected. A document whose .ann cannot be placed at all (a malformed line, offsets past the end) has
  every sentence rejected; a document that is not UTF-8, or a .ann without its .txt, counts as one
  rejected record, and so does a .txt without its .ann in a folder of standoff documents (brat always
  writes both; elsewhere a lone .txt that does not look like IOB2 is not data: README.txt).
- Only T (text-bound) lines are entities; brat's other lines (R, E, A, M, N, #) mean nothing to NER.

IOB2 details: an I- tag that does not continue an entity of its type is rejected, not repaired to B- as
seqeval does: in real files it means shifted or IOB1 tags, which a silent repair would hide.
Splits: the shared task's own file names fix theirs (Genia4ERtask*.iob2 is train, Genia4EReval*.iob2 the
official test set); a file under a folder named test/eval or dev/devel is test or validation; otherwise
unset and the convert stage assigns one. (sampletest*.iob2 are, despite the name, training abstracts.)
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from tunepipe.errors import StageError
from tunepipe.ledger import Ledger

TYPES = ["DNA", "RNA", "cell_line", "cell_type", "protein"]
OPTIONS: dict = {}  # takes none
LABELS = ["O"] + [f"{p}-{t}" for t in TYPES for p in "BI"]
IOB2_SUFFIXES = {".iob2", ".iob", ".conll", ".tsv"}
SPLIT_BY_FOLDER = {"test": "test", "eval": "test", "dev": "validation", "devel": "validation"}
SPLIT_BY_FILE = {"genia4ertask": "train", "genia4ereval": "test"}  # the BioNLP/JNLPBA 2004 release's names
TOKEN = re.compile(r"[^\W_]+|[^\s\ufeff]")  # \ufeff: a BOM is a character for offsets, not a token
SENTENCE_GAP = re.compile(r"\n|(?<=[.!?])[ \t]+(?=[A-Z])")
TAG = re.compile(r"(B|I)-(.+)")
DOC_MARKERS = ("###", "-DOCSTART-")  # GENIA's ###MEDLINE:<pmid> and CoNLL's -DOCSTART- lines
DOC_MARKER_BYTES = tuple(m.encode() for m in DOC_MARKERS)


def split_of(path: Path, raw_dir: Path) -> str | None:
    """Only folders below raw_dir count: /home/test/... must not make everything test."""
    by_name = next((split for prefix, split in SPLIT_BY_FILE.items() if path.name.lower().startswith(prefix)), None)
    if by_name:
        return by_name
    folders = path.relative_to(raw_dir).parent.parts
    return next((SPLIT_BY_FOLDER[p.lower()] for p in folders if p.lower() in SPLIT_BY_FOLDER), None)


def check_tags(tags: list[str]) -> None:
    previous = "O"
    for tag in tags:
        if tag != "O":
            match = TAG.fullmatch(tag)
            if not match:
                raise ValueError(f"bad tag: {tag!r} (expected O, B-<type> or I-<type>)")
            if match.group(2) not in TYPES:
                raise ValueError(f"unknown entity type: {match.group(2)!r}")
            if match.group(1) == "I" and previous[2:] != match.group(2):
                raise ValueError(f"I- tag does not continue an entity: {tag} after {previous}")
        previous = tag


def iob2_sentences(path: Path) -> Iterator[tuple[int, list[tuple[int, bytes]]]]:
    """(first line number, [(line number, raw line)]) per sentence; markers and blank lines end one."""
    lines: list[tuple[int, bytes]] = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            raw = raw.rstrip(b"\r\n")
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip() or raw.startswith(DOC_MARKER_BYTES):
                if lines:
                    yield lines[0][0], lines
                lines = []
            else:
                lines.append((number, raw))
    if lines:
        yield lines[0][0], lines


def parse_iob2(lines: list[tuple[int, bytes]]) -> tuple[list[str], list[str]]:
    tokens, tags = [], []
    for number, raw in lines:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"wrong encoding: line {number} is not UTF-8 (byte {err.start})") from None
        fields = line.split("\t")
        if len(fields) == 1:
            raise ValueError(f"missing separator: line {number} has no TAB between token and tag")
        if len(fields) > 2:
            raise ValueError(f"bad line: line {number} has {len(fields)} fields, expected token<TAB>tag")
        if not fields[0].strip():
            raise ValueError(f"empty token: line {number}")
        tokens.append(fields[0].strip())
        tags.append(fields[1].strip())
    check_tags(tags)
    return tokens, tags


def read_iob2(path: Path, split: str | None, ledger: Ledger) -> Iterator[dict[str, Any]]:
    for number, (first, lines) in enumerate(iob2_sentences(path), start=1):
        ledger.read += 1
        try:
            tokens, tags = parse_iob2(lines)
        except ValueError as err:
            ledger.reject(f"{path.name}:{first}", str(err), b"\n".join(r for _, r in lines).decode("latin-1"))
            continue
        record = {"id": f"{path.stem}:{number}", "kind": "tokens", "tokens": tokens, "tags": tags}
        yield record | ({"split": split} if split else {})


def parse_ann(ann: str, size: int) -> tuple[list[tuple[int, int, str, str, str, int]], str | None]:
    """Entities (start, end, type, text, why-bad or "", line) and a document-level problem, if any."""
    entities = []
    for number, line in enumerate(ann.splitlines(), start=1):
        if not line.strip() or line[0] in "REAMN#*":
            continue
        fields = line.split("\t")
        parts = fields[1].split(" ", 1) if len(fields) == 3 and line[0] == "T" else []
        try:
            pieces = [tuple(int(x) for x in p.split(" ")) for p in parts[1].split(";")]
            if any(len(p) != 2 or not 0 <= p[0] < p[1] for p in pieces):
                raise ValueError
        except (IndexError, ValueError):
            return entities, f"malformed annotation line {number}: {line[:80]!r}"
        start, end = pieces[0][0], pieces[-1][1]
        if end > size:
            return entities, f"offsets past the end of the text: line {number} ends at {end} > {size}"
        bad = ("discontinuous entity (not expressible in IOB2)" if len(pieces) > 1
               else f"unknown entity type: {parts[0]!r}" if parts[0] not in TYPES else "")
        entities.append((start, end, parts[0], fields[2], bad, number))
    return entities, None


def standoff_records(pmid: str, text: str, ann: str) -> Iterator[tuple[str, str, str, dict[str, Any] | str]]:
    """(id, sentence text, ann line or '', record or reject reason) per sentence of one document."""
    entities, doc_problem = parse_ann(ann, len(text))
    entities.sort()
    # sentences: split at gaps that do not fall inside an entity span
    cuts, begin = [], 0
    for gap in SENTENCE_GAP.finditer(text):
        if not any(s < gap.start() < e for s, e, *_ in entities):
            cuts.append((begin, gap.start()))
            begin = gap.end()
    cuts.append((begin, len(text)))
    pieces = [(s, e) for s, e in cuts if TOKEN.search(text, s, e)]
    for number, (s_begin, s_end) in enumerate(pieces, start=1):
        sid, sentence = f"{pmid}:{number}", text[s_begin:s_end]
        inside = [x for x in entities if x[0] < s_end and x[1] > s_begin]
        # the first problem decides the reject reason; a document-level one comes first
        problem, reach = ((doc_problem, "") if doc_problem else None), -1
        for start, end, kind, expected, bad, line in inside:
            if not bad and text[start:end] != expected:
                bad = f"offsets do not match the text: {text[start:end]!r} != {expected!r}"
            if not bad and start < reach:  # entities are sorted by start: reach is the furthest end so far
                bad = "overlapping entities: IOB2 cannot nest them"
            if not bad and not TOKEN.search(text, start, end):
                bad = "empty entity: its span holds no token"
            reach = max(reach, end)
            if bad and not problem:
                problem = (bad, f":{line}")
        if problem:
            yield sid, sentence, problem[1], problem[0]
            continue
        bounds = {b for x in inside for b in x[:2]}
        spans = []
        for match in TOKEN.finditer(text, s_begin, s_end):
            edges = [match.start(), *sorted(b for b in bounds if match.start() < b < match.end()), match.end()]
            spans += zip(edges, edges[1:])
        tags = ["O"] * len(spans)
        for start, end, kind, *_ in inside:
            covered = [i for i, (a, b) in enumerate(spans) if a >= start and b <= end]
            for i in covered:
                tags[i] = ("B-" if i == covered[0] else "I-") + kind
        # group: an abstract's sentences share a split, so no document straddles train and test
        yield sid, sentence, "", {"id": sid, "group": sid.rsplit(":", 1)[0], "kind": "tokens",
                                  "tokens": [text[a:b] for a, b in spans], "tags": tags}


def read_standoff(txt_path: Path, ann_path: Path, split: str | None, ledger: Ledger) -> Iterator[dict[str, Any]]:
    texts = {}
    for path in (txt_path, ann_path):
        other = ann_path if path is txt_path else txt_path
        if not path.exists():  # brat always writes both; one alone is a document we cannot use
            ledger.read += 1
            ledger.reject(path.name, f"missing {'text' if path is txt_path else 'annotation'} file: "
                                     f"no {path.name} beside {other.name}",
                          other.read_bytes().decode("utf-8", "backslashreplace"))  # keep what we have
            return
        try:
            texts[path] = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            ledger.read += 1
            ledger.reject(path.name, f"wrong encoding: not UTF-8 (byte {err.start})",
                          path.read_bytes().decode("utf-8", "backslashreplace"))
            return
    for sid, sentence, line, result in standoff_records(txt_path.stem, texts[txt_path], texts[ann_path]):
        ledger.read += 1
        if isinstance(result, str):
            ledger.reject(f"{ann_path.name}{line}" if line else f"{txt_path.name}#{sid}", result, sentence)
        else:
            yield result | ({"split": split} if split else {})


def looks_like_iob2(path: Path) -> bool:
    with open(path, "rb") as handle:
        for raw in handle:
            line = raw.decode("utf-8", "replace").strip()
            if line and not line.startswith(DOC_MARKERS):
                parts = line.split("\t")
                return len(parts) == 2 and (parts[1] == "O" or TAG.fullmatch(parts[1]) is not None)
    return False


def read(raw_dir: Path, options: dict[str, Any], ledger: Ledger) -> Iterator[dict[str, Any]]:
    if options:
        raise StageError(f"jnlpba: takes no options, got {sorted(options)}")
    raw_dir = Path(raw_dir)
    files = sorted(p for p in raw_dir.rglob("*") if p.is_file())
    standoff_dirs = {p.parent for p in files if p.suffix == ".ann"}
    read_before, found = ledger.read, False
    for path in files:
        txt, ann, split = path.with_suffix(".txt"), path.with_suffix(".ann"), split_of(path, raw_dir)
        if path.suffix == ".ann" and not txt.exists():
            found = True
            yield from read_standoff(txt, path, split, ledger)
        elif path.suffix == ".txt" and (ann.exists() or path.parent in standoff_dirs):
            found = True
            yield from read_standoff(path, ann, split, ledger)
        elif path.suffix in IOB2_SUFFIXES or (path.suffix == ".txt" and looks_like_iob2(path)):
            found = True
            yield from read_iob2(path, split, ledger)
    if not found:
        raise StageError(f"{raw_dir}: no JNLPBA data (*.iob2, or brat <pmid>.txt + <pmid>.ann)")
    if ledger.read == read_before:
        raise StageError(f"{raw_dir}: the JNLPBA files hold no sentences (empty files?)")
