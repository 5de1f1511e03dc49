"""WebQA refusal rows the release does not hold: a question paired with evidence that does not answer it.

Two kinds, each row tagged with it in `refusal_kind` (the release's own `no_answer` evidences are "given"):
- "swap": the question asked of another question's evidence. Easy to spot without reading: the evidence is
  about something else, so a rule counting the question's characters in it finds most of them.
- "hard_negative": the question's OWN evidence with every sentence (and every retrieved snippet, cut at
  `<e>`) that holds one of the question's answers removed. Still about the question, but no longer answering
  it: kept only when at least `hard_negative_min_chars` letters and digits are left and no answer string of
  the question remains anywhere in what is left.
Both are made one per question, questions taken in the order of a hash of their id, so the choice does not
depend on file order and a row's split is its question's split (`place`, from convert).
"""
from __future__ import annotations

import re
import unicodedata
from typing import Any, Callable

from tunepipe.splits import stable_choice, stable_fraction

PIECES = re.compile(r"(?<=[。！？!?；;\n])|<e>")  # after a sentence's end, or at a retrieved snippet's cut
SPACE = re.compile(r"\s+")
ATTEMPTS = 20  # an unfit swap partner is re-drawn this many times, then the question is given up

Placer = Callable[[str | None, str], str] | None
RowMaker = Callable[..., dict[str, Any]]


def questions_of(good: list[dict], place: Placer) -> tuple[dict[str, dict], dict[str | None, list[dict]]]:
    """Each question's text, split, answers and answerable evidences; each split's evidences, in id order."""
    questions: dict[str, dict] = {}
    pools: dict[str | None, list[dict]] = {}
    for item in sorted(good, key=lambda item: item["row"]["id"]):  # id order, not file order
        split = place(item["split"], item["qid"]) if place else item["split"]
        info = questions.setdefault(item["qid"], dict(text=item["question"], split=split, answers=set(), own=[]))
        info["answers"].update(item["row"]["answers"])
        if item["row"]["answers"]:
            info["own"].append(item)
        pools.setdefault(split, []).append(item)
    return questions, pools


def one_per_question(questions: dict[str, dict], count: int, salt: str,
                     refusal_for: Callable[[str, dict], dict | None]) -> list[dict]:
    """Up to `count` refusals, at most one per question, the questions taken in the order of a hash of their
    id; `refusal_for(question id, its info)` makes one, or None when the question yields none."""
    made = []
    for qid in sorted(questions, key=lambda qid: (stable_fraction(qid, salt), qid)):
        if len(made) == count:
            break
        refusal = refusal_for(qid, questions[qid])
        if refusal is not None:
            made.append(refusal)
    return made


def swaps(good: list[dict], count: int, opts: dict[str, Any], make_row: RowMaker, place: Placer = None) -> list[dict]:
    """Up to `count` swapped refusals: the question asked of an evidence of another question of its split,
    re-drawn while that question has the same text (its own evidences included) or the evidence holds one of
    our answers, since it might answer us after all."""
    questions, pools = questions_of(good, place)

    def swapped(qid: str, info: dict) -> dict | None:
        for attempt in range(ATTEMPTS):
            _, partner = stable_choice(qid if attempt == 0 else f"{qid}/{attempt}", pools[info["split"]],
                                       salt=f"{opts['seed']}:partner")
            if partner["question"] != info["text"] and not any(a in partner["evidence"] for a in info["answers"]):
                sid = f"{qid}#syn-{partner['row']['id']}"
                return {"where": f"synthesized#{sid}", "row": make_row(
                    sid, qid, info["text"], partner["evidence"], [], opts, info["split"], refusal_kind="swap")}
        return None

    return one_per_question(questions, count, f"{opts['seed']}:synth", swapped)


def content_length(text: str) -> int:
    """Letters and digits (CJK characters included): what is left to read once punctuation and spaces go."""
    return sum(unicodedata.category(char)[0] in "LN" for char in text)


def without_answers(raw_evidence: str, answers: set[str], clean: Callable[[str], str]) -> str | None:
    """The evidence with each piece holding an answer cut (pieces rejoined as at a snippet cut), or None when
    an answer string is still in what is left (an answer split across two pieces)."""
    kept = [piece for piece in PIECES.split(raw_evidence) if piece.strip() and not any(a in piece for a in answers)]
    text = clean("<e>".join(kept))
    squeezed = SPACE.sub("", text)  # a cut between two word characters leaves a space: "二十<e>四个" is "二十 四个"
    return None if not text or any(SPACE.sub("", a) in squeezed for a in answers) else text


def hard_negatives(good: list[dict], count: int, opts: dict[str, Any], make_row: RowMaker,
                   clean: Callable[[str], str], place: Placer = None) -> list[dict]:
    """Up to `count` refusals, one per question, each from the first of its answerable evidences (in hash order)
    that leaves enough text once every piece holding one of the question's answers is cut."""
    questions, _ = questions_of(good, place)
    salt = f"{opts['seed']}:hard"

    def cut(qid: str, info: dict) -> dict | None:
        for item in sorted(info["own"], key=lambda item: (stable_fraction(item["row"]["id"], salt), item["row"]["id"])):
            text = without_answers(item["raw_evidence"], info["answers"], clean)
            if text is not None and content_length(text) >= opts["hard_negative_min_chars"]:
                hid = f"{item['row']['id']}#hard"
                return {"where": f"synthesized#{hid}", "row": make_row(
                    hid, qid, info["text"], text, [], opts, info["split"], refusal_kind="hard_negative")}
        return None

    return one_per_question(questions, count, salt, cut)


def made_refusals(good: list[dict], answerable: int, refusals: int, opts: dict[str, Any], make_row: RowMaker,
                  clean: Callable[[str], str], place: Placer = None) -> list[dict]:
    """Hard negatives, then swaps, each up to its budget and together only what the ratio lacks ("auto": no
    budget but the ratio); with no ratio, each budget as it is."""
    ratio = opts["answerable_ratio"]
    lacking = max(0, round(answerable / ratio) - refusals) if ratio is not None else None

    def within(budget: int | str, made: int) -> int:
        return budget if lacking is None else lacking - made if budget == "auto" else min(budget, lacking - made)

    hard = within(opts["hard_negatives"], 0)
    made = hard_negatives(good, hard, opts, make_row, clean, place) if hard else []
    swapped = within(opts["synthesize_refusals"], len(made))
    return made + (swaps(good, swapped, opts, make_row, place) if swapped else [])
