"""Financial PhraseBank v1.0: `Sentences_<level>.txt`, one `sentence@label` per line, latin-1.

Options (defaults in OPTIONS):
- level: which agreement file is the source of records: 50Agree, 66Agree, 75Agree or AllAgree.
- test_level: the agreement file the test split is drawn from (None: the same file as `level`).
- test_fraction: the share of the test_level sentences that form the test split.

Why the reader draws the test split itself: the four files are nested subsets of the same sentences
(AllAgree ⊂ 75Agree ⊂ 66Agree ⊂ 50Agree), so training on 50Agree and testing on 66Agree leaks every test
sentence into training. A sentence is test when it is in the test_level file and the hash of its text
falls under test_fraction; every record of `level` with that text gets split "test", so it is never in
train/validation. Other records leave `split` unset and the convert stage assigns train/validation (give
convert a split without test, or it adds sentences of its own choosing to test).

Decisions:
- id: the first 12 hex digits of sha256(sentence text): the same sentence has the same id at every level.
  50Agree holds 8 sentences twice (6 with the same label, 2 with different labels). Both copies are kept
  (the file's label counts are the data's) and the second gets id `<hash>-2`; as the test draw hashes the
  text, both copies always land on the same side of the test split.
- The last `@` separates the label, so a sentence may itself contain `@`. Labels are exact (no case
  folding): positive, negative, neutral.
- Encoding: latin-1 decodes any byte, so a wrong encoding never fails to decode; instead a line holding
  valid multi-byte UTF-8 (which the real files never do) is rejected as "wrong encoding", and a UTF-8 BOM
  stops the run (the whole file was re-saved as UTF-8; set `encoding: utf-8`). The release's own
  mojibake (`Weckstr+Âm`) is kept as it is: it is the text the annotators labelled.
"""
from __future__ import annotations

import codecs
import hashlib
from pathlib import Path
from typing import Any, Iterator

from tunepipe.errors import StageError
from tunepipe.ledger import Ledger
from tunepipe.splits import stable_fraction

LEVELS = ("50Agree", "66Agree", "75Agree", "AllAgree")
LABELS = ("positive", "negative", "neutral")
OWN_SPLITS = ("test",)  # drawn here from options.test_level; convert must not add rows to it
OPTIONS = {"level": "50Agree", "test_level": None, "test_fraction": 0.2, "encoding": "latin-1"}
TEST_SALT = "phrasebank-test"
BOM = b"\xef\xbb\xbf"


def text_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def in_test(text: str, fraction: float) -> bool:
    """Fixed by the sentence text alone, so every copy of a sentence is on the same side."""
    return stable_fraction(text, TEST_SALT) < fraction


def level_file(raw_dir: Path, level: Any) -> Path:
    if level not in LEVELS:
        raise StageError(f"phrasebank: unknown level {level!r} (use one of {', '.join(LEVELS)})")
    # the release's Sentences_<level>.txt, or any <prefix>_<level>.txt (copies, samples)
    found = sorted(Path(raw_dir).rglob(f"*_{level}.txt"))
    if not found:
        raise StageError(f"{raw_dir}: no *_{level}.txt such as Sentences_{level}.txt (Financial PhraseBank level '{level}')")
    if len(found) > 1:
        raise StageError(f"{raw_dir}: *_{level}.txt found {len(found)} times: {found[0]}, {found[1]}")
    return found[0]


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def parse_line(raw: bytes, encoding: str) -> tuple[str, str]:
    """`sentence@label` -> (sentence, label), or ValueError with the reject reason."""
    try:
        line = raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise ValueError(f"wrong encoding: not {encoding} at byte {err.start}") from None
    if encoding == "latin-1" and not raw.isascii() and is_utf8(raw):
        raise ValueError("wrong encoding: UTF-8 text in a latin-1 file")
    if "@" not in line:
        raise ValueError("missing separator: no '@' before the label")
    sentence, label = line.rsplit("@", 1)
    sentence, label = sentence.strip(), label.strip()
    if label not in LABELS:
        raise ValueError(f"unknown label: {label[:40]!r} (expected {', '.join(LABELS)})")
    if not sentence:
        raise ValueError("empty sentence")
    return sentence, label


def lines(path: Path, encoding: str) -> Iterator[tuple[int, bytes]]:
    """Non-blank raw lines with their numbers; the last line may lack its newline (AllAgree does)."""
    data = path.read_bytes()
    if data.startswith(BOM):
        if encoding == "latin-1":
            raise StageError(f"{path.name}: starts with a UTF-8 byte-order mark, so it was re-saved as UTF-8; "
                             "the release is latin-1 (set options.encoding: utf-8 to read it)")
        data = data[len(BOM):]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if raw.strip():
            yield number, raw


def drawn_for_test(path: Path, encoding: str, fraction: float) -> set[str]:
    """Texts of the test_level file drawn for test; its bad lines are simply not candidates."""
    drawn = set()
    for _, raw in lines(path, encoding):
        try:
            sentence, _ = parse_line(raw, encoding)
        except ValueError:
            continue
        if in_test(sentence, fraction):
            drawn.add(sentence)
    return drawn


def read(raw_dir: Path, options: dict[str, Any], ledger: Ledger) -> Iterator[dict[str, Any]]:
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise StageError(f"phrasebank: unknown options {sorted(unknown)} (known: {', '.join(OPTIONS)})")
    opts = OPTIONS | {k: v for k, v in options.items() if v is not None}
    try:
        fraction = float(opts["test_fraction"])
    except (TypeError, ValueError):
        fraction = -1.0
    if not 0.0 <= fraction <= 1.0:
        raise StageError(f"phrasebank: test_fraction must be a number from 0 to 1, got {opts['test_fraction']!r}")
    try:  # one spelling per codec, so "latin1" / "ISO-8859-1" also get the UTF-8 check below
        encoding = codecs.lookup(str(opts["encoding"])).name.replace("iso8859-1", "latin-1")
    except LookupError:
        raise StageError(f"phrasebank: unknown encoding {opts['encoding']!r}") from None
    source = level_file(raw_dir, opts["level"])
    test_source = level_file(raw_dir, opts["test_level"] or opts["level"])
    drawn = drawn_for_test(test_source, encoding, fraction)

    seen: dict[str, int] = {}
    before = ledger.read
    for number, raw in lines(source, encoding):
        ledger.read += 1
        try:
            sentence, label = parse_line(raw, encoding)
        except ValueError as err:
            ledger.reject(f"{source.name}:{number}", str(err), raw.decode("latin-1"))
            continue
        base = text_id(sentence)
        seen[base] = seen.get(base, 0) + 1
        # group: both copies of a repeated sentence land in the same split
        record = {"id": base if seen[base] == 1 else f"{base}-{seen[base]}", "group": base, "kind": "labelled",
                  "text": sentence, "label": label}
        if sentence in drawn:
            record["split"] = "test"
        yield record
    if ledger.read == before:
        raise StageError(f"{source}: no sentences (empty file)")
