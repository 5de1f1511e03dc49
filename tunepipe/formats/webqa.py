"""Baidu WebQA: a question + its evidences (answer list, or ["no_answer"]) -> Alpaca rows for refusal-aware QA.

Raw: .json files, each ONE object {question id: {"question", "evidences": {evidence id: {"answer": [..],
"evidence": "..<e>.."}}}}. A raw record is one EVIDENCE (a question with no evidences object: one record).
Decisions, each checked in tests/formats/test_webqa.py:
- "<e>" cuts between retrieved snippets: between two word characters it becomes ONE SPACE (gluing could
  fuse a false word, or two numbers into one); next to punctuation or at an end it is just removed.
- A truncated .json file raises StageError (line, column): it is one object, so nothing in it can be
  recovered, and a one-line reject would hide thousands of lost evidences. So does an empty file.
- Bytes that are not UTF-8 (GBK) are decoded with surrogateescape: the JSON structure still parses and
  only evidences whose text holds such bytes are rejected. Of repeated ids, the first is kept.
- Every choice hashes an id, with a salt per purpose: nothing depends on file or dict order, and being
  kept by down-sampling is not correlated with the refusal template a row got.
- Refusal rows the release lacks (swaps, hard negatives: tunepipe/formats/webqa_refusals.py) are made only as
  answerable_ratio asks, hard negatives first; every row says its `refusal_kind` (null when it is answerable).
- `rows: preference` writes each row as a DPO pair over the same prompt: its answer over a refusal where the
  evidence holds it; its refusal over the question's own answer where it does not (a refusal of a question
  that has no answer anywhere in the input has nothing to set against it and is dropped with that reason).
- Ledger: read counts raw evidences only. A down-sampled row is good input left out on purpose: it is
  dropped as "down-sampled: ..." (kept in the rejects file, not counted toward max_reject_rate). A
  synthesized refusal has no raw record: it adds 1 to ledger.synthesized, so
  read + synthesized = written + rejected + dropped.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from tunepipe.errors import StageError
from tunepipe.ledger import Ledger
from tunepipe.formats.webqa_refusals import made_refusals
from tunepipe.splits import stable_choice, stable_fraction

REFUSAL_TEMPLATES = [  # no final punctuation, like the first (given) one
    "根据提供的内容，我无法找到问题的相关信息", "给定的材料中没有提到这个问题的答案",
    "抱歉，上文没有包含能回答这个问题的信息", "从这段文字里找不到该问题的答案",
    "提供的资料与这个问题无关，我无法据此作答", "这段内容没有给出回答该问题所需的信息",
    "根据上文，我无法确定这个问题的答案", "很抱歉，给定的下文中找不到相关答案",
    "上述内容并未涉及这个问题，因此我无法回答", "仅凭提供的信息，我没有办法回答这个问题",
]
OPTIONS = {
    "prompt_template": "请根据给定下文：{evidence}\n告诉我{question}\n",
    "refusal_templates": REFUSAL_TEMPLATES,
    "answerable_ratio": None,   # answerable:refusal target, e.g. 1.0; null keeps the data as it is
    "synthesize_refusals": 0,   # at most this many refusals made from another question's evidence, or "auto":
                                # as many as answerable_ratio lacks, so the data's size decides, not a number
    "hard_negatives": 0,        # at most this many refusals made from the question's own evidence with every
                                # sentence holding an answer cut, or "auto"; made before swaps
    "hard_negative_min_chars": 20,  # letters and digits a hard negative keeps at least
    "seed": "webqa",            # salt of every hash choice (template, down-sample, synthesis)
    "rows": "instructions",     # or "pairs": (question, evidence) labelled answerable | refuse, the same ids and
                                # splits: what an answerable-or-not classifier in front of the generator reads;
                                # or "preference": each row as a chosen / rejected pair, for DPO after the SFT
}
MADE = ("swap", "hard_negative")  # refusal kinds with no raw record behind them
JOIN = re.compile(r"(?<=\w)(?:\s*<e>\s*)+(?=\w)")  # "天<e>地" -> "天 地"
CUT = re.compile(r"(?:\s*<e>\s*)+")                 # "天。<e>地" -> "天。地"
SPLITS = {"train": "train", "dev": "validation", "val": "validation", "validation": "validation", "test": "test"}


def options_of(options: dict[str, Any]) -> dict[str, Any]:
    """Defaults + checked overrides: a typo or a bad value stops the stage before any work."""
    unknown = sorted(options.keys() - OPTIONS.keys())
    if unknown:
        raise StageError(f"webqa options: unknown {unknown}; known: {', '.join(sorted(OPTIONS))}")
    opts = {**OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    try:
        opts["prompt_template"].format(evidence="", question="")
    except (KeyError, IndexError, ValueError, AttributeError) as err:
        raise StageError(f"webqa options: prompt_template may use only {{evidence}} and {{question}} ({err!r})")
    if opts["rows"] not in ("instructions", "pairs", "preference"):
        raise StageError(f"webqa options: rows is instructions, pairs or preference, got {opts['rows']!r}")
    templates, ratio = opts["refusal_templates"], opts["answerable_ratio"]
    if not isinstance(templates, list) or not templates or not all(isinstance(t, str) and t for t in templates):
        raise StageError("webqa options: refusal_templates must be a non-empty list of non-empty strings")
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0):
        raise StageError(f"webqa options: answerable_ratio must be a number > 0 or null, got {ratio!r}")
    for name in ("synthesize_refusals", "hard_negatives", "hard_negative_min_chars"):
        value = opts[name]
        if (value != "auto" or name == "hard_negative_min_chars") and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise StageError(f"webqa options: {name} must be an integer >= 0"
                             + ("" if name == "hard_negative_min_chars" else " or auto") + f", got {value!r}")
        if value == "auto" and ratio is None:
            raise StageError(f"webqa options: {name}: auto makes what answerable_ratio lacks; "
                             "set answerable_ratio (e.g. 1.0) or give a number")
    return opts


def split_of(path: Path) -> str | None:
    """me_train.json -> train, me_validation.ann.json -> validation; other names leave it to convert."""
    return next((SPLITS[part] for part in re.split(r"[._-]", path.name.lower()) if part in SPLITS), None)


class JsonObject(dict):
    """A JSON object that keeps its repeated keys, of which json.loads would silently keep only the last."""

    def __init__(self, pairs: list[tuple[str, Any]]):
        super().__init__()
        self.repeated = []
        for key, value in pairs:
            if key in self:
                self.repeated.append((key, value))
            else:
                self[key] = value


def printable(value: Any) -> Any:
    """The rejects file is strict UTF-8: undecodable bytes are written as backslash-x escapes instead."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    return [printable(v) for v in value] if isinstance(value, list) else value


def reject(ledger: Ledger, where: str, reason: str, record: Any) -> None:
    ledger.reject(printable(where), printable(reason), printable(record))


def drop(ledger: Ledger, where: str, reason: str, record: Any) -> None:
    ledger.drop(printable(where), printable(reason), printable(record))


def questions_in(path: Path) -> list[tuple[str, Any]]:
    """(question id, entry) in file order, repeated keys last; StageError when the file is unusable."""
    data = path.read_bytes()
    if not data.strip():
        raise StageError(f"{path}: empty file (a broken download?)")
    try:
        top = json.loads(data.decode("utf-8-sig", errors="surrogateescape"), object_pairs_hook=JsonObject)
    except json.JSONDecodeError as err:
        raise StageError(f"{path}: malformed JSON at line {err.lineno} column {err.colno} (char {err.pos}): "
                         f"{err.msg}; the file is one object, so no question in it can be read") from None
    if not isinstance(top, dict):
        raise StageError(f"{path}: expected one JSON object keyed by question id, got {type(top).__name__}")
    return list(top.items()) + top.repeated


def checked_text(value: Any, field: str) -> str:
    """The stripped string, or ValueError carrying the reject reason."""
    if value is None:
        raise ValueError(f"missing field: {field}")
    if not isinstance(value, str):
        raise ValueError(f"wrong type: {field} is {type(value).__name__}, expected a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:  # a surrogateescape'd byte: the file is not UTF-8 here
        raise ValueError(f"wrong encoding: {field} is not UTF-8 at character {err.start} (GBK?)") from None
    if not value.strip():
        raise ValueError(f"empty text: {field}")
    return value.strip()


def without_cuts(text: str) -> str:
    return CUT.sub("", JOIN.sub(" ", text)).strip()


def checked_evidence(raw: Any) -> tuple[str, list[str]]:
    """(evidence text without <e>, answers); answers == [] means no_answer."""
    if not isinstance(raw, dict):
        raise ValueError(f"wrong type: evidence entry is {type(raw).__name__}, expected an object")
    evidence = without_cuts(checked_text(raw.get("evidence"), "evidence"))
    if not evidence:
        raise ValueError("empty text: evidence (only <e> separators)")
    answer = raw.get("answer")
    if answer is None:
        raise ValueError("missing field: answer")
    if not isinstance(answer, list):
        raise ValueError(f"wrong type: answer is {type(answer).__name__}, expected a list of strings")
    # blank alternatives are dropped, repeats merged (order kept); an all-blank list is empty text
    answers = list(dict.fromkeys(checked_text(a, "answer") for a in answer if not isinstance(a, str) or a.strip()))
    if not answers:
        raise ValueError("empty text: answer")
    if "no_answer" in answers and len(answers) > 1:
        raise ValueError(f"conflicting answer: no_answer together with {answers}")
    return evidence, [] if answers == ["no_answer"] else answers


def make_row(eid: str, qid: str, question: str, evidence: str, answers: list[str], opts: dict[str, Any],
             split: str | None, refusal_kind: str = "given") -> dict[str, Any]:
    row = {"id": eid, "kind": "instruction",
           "instruction": opts["prompt_template"].format(evidence=evidence, question=question), "input": ""}
    if answers:
        row.update(output="；".join(answers), answerable=True, refusal_template=None)
    else:  # the pipeline's rule: a random choice is keyed on the id and recorded in the row
        index, refusal = stable_choice(eid, opts["refusal_templates"], salt=f"{opts['seed']}:refusal")
        row.update(output=refusal, answerable=False, refusal_template=index)
    # group: all evidences of a question share a split, so a test question was never seen in training;
    # question and evidence kept apart too, for what reads them alone (the overlap rule, a pair classifier)
    row.update(answers=answers, synthesized=refusal_kind in MADE, refusal_kind=None if answers else refusal_kind,
               question_id=qid, question=question, evidence=evidence, group=qid, **({"split": split} if split else {}))
    return row


def as_pair(row: dict[str, Any]) -> dict[str, Any]:
    """The same row as a labelled (question, evidence) pair: is the evidence an answer to the question?"""
    pair = {key: value for key, value in row.items() if key not in ("instruction", "input", "output")}
    return {**pair, "kind": "labelled", "text": row["question"], "text_pair": row["evidence"],
            "label": "answerable" if row["answerable"] else "refuse"}


def as_preference(kept: list[dict], opts: dict[str, Any], ledger: Ledger) -> Iterator[dict[str, Any]]:
    """Each row as a conversational pair over its own prompt (see the top of this module)."""
    answers: dict[str, list[str]] = {}
    for item in kept:
        answers.setdefault(item["row"]["question_id"], []).extend(item["row"]["answers"])
    for item in kept:
        row = item["row"]
        if row["answerable"]:
            chosen = row["output"]
            rejected = stable_choice(row["id"], opts["refusal_templates"], salt=f"{opts['seed']}:refusal")[1]
        elif answers[row["question_id"]]:
            chosen, rejected = row["output"], "；".join(dict.fromkeys(answers[row["question_id"]]))
        else:
            drop(ledger, item["where"], "no preference pair: the question has no answer in the input to set "
                                        "against its refusal", row)
            continue
        pair = {key: value for key, value in row.items() if key not in ("instruction", "input", "output")}
        yield {**pair, "kind": "preference", "prompt": [{"role": "user", "content": row["instruction"]}],
               "chosen": [{"role": "assistant", "content": chosen}],
               "rejected": [{"role": "assistant", "content": rejected}]}


def down_sample(items: list[dict], keep: int, label: str, opts: dict, ledger: Ledger) -> list[dict]:
    """Keep the `keep` items with the smallest hash of their id; drop the rest as down-sampled."""
    salt = f"{opts['seed']}:sample"
    ranked = sorted(items, key=lambda item: (stable_fraction(item["row"]["id"], salt), item["row"]["id"]))
    for item in ranked[keep:]:
        drop(ledger, item["where"], f"down-sampled: answerable_ratio {opts['answerable_ratio']} keeps {keep} "
                                    f"of {len(items)} {label}", item["row"])
    return ranked[:keep]


def read(raw_dir: Path, options: dict[str, Any], ledger: Ledger,
         place: Callable[[str | None, str], str] | None = None) -> Iterator[dict[str, Any]]:
    opts = options_of(options)
    files = sorted(p for p in Path(raw_dir).rglob("*.json") if p.is_file())
    if not files:
        raise StageError(f"{raw_dir}: no WebQA .json files")
    good, seen_questions, seen_evidences = [], set(), set()
    for path in files:
        split = split_of(path)
        for qid, entry in questions_in(path):
            evidences = entry.get("evidences") if isinstance(entry, dict) else None
            if not isinstance(evidences, dict) or not evidences:  # nothing to split: one record, one reject
                ledger.read += 1
                reason = ("wrong type: question entry is not an object" if not isinstance(entry, dict) else
                          "missing field: evidences" if evidences is None else
                          "empty text: evidences" if evidences in ({}, [], "") else "wrong type: evidences")
                reject(ledger, f"{path.name}#{qid}", reason, entry)
                continue
            again = qid in seen_questions
            seen_questions.add(qid)
            for eid, raw in list(evidences.items()) + evidences.repeated:
                ledger.read += 1
                try:
                    checked_text(qid, "question id"), checked_text(eid, "evidence id")  # GBK ids, "" ids
                    if again or eid in seen_evidences:
                        raise ValueError(f"duplicate id: {'question ' + qid if again else eid} seen before")
                    seen_evidences.add(eid)
                    question = checked_text(entry.get("question"), "question")
                    evidence, answers = checked_evidence(raw)
                except ValueError as err:
                    reject(ledger, f"{path.name}#{eid}", str(err), {"question_id": qid, "question": entry.get(
                        "question"), "evidence_id": eid, "evidence": raw})
                    continue
                good.append({"where": f"{path.name}#{eid}", "qid": qid, "question": question, "evidence": evidence,
                             "raw_evidence": raw["evidence"], "split": split,
                             "row": make_row(eid, qid, question, evidence, answers, opts, split)})

    answerable = [item for item in good if item["row"]["answerable"]]  # balance the whole input, not per split
    refusals = [item for item in good if not item["row"]["answerable"]]
    made = made_refusals(good, len(answerable), len(refusals), opts, make_row, without_cuts, place)
    ledger.synthesized += len(made)  # no raw record behind them, yet convert counts them written (see top)
    refusals += made
    ratio = opts["answerable_ratio"]
    if ratio is not None and (answerable or refusals):
        if not answerable or not refusals:
            raise StageError(f"{raw_dir}: answerable_ratio {ratio} cannot be met: {len(answerable)} answerable,"
                             f" {len(refusals)} refusal rows (synthesize_refusals can add refusals)")
        if len(refusals) * ratio < len(answerable):  # max(1, ..): a ratio never empties a side
            answerable = down_sample(answerable, max(1, round(len(refusals) * ratio)), "answerable", opts, ledger)
        else:
            refusals = down_sample(refusals, max(1, round(len(answerable) / ratio)), "refusals", opts, ledger)
    kept = [item for item in good + made if id(item) in {id(item) for item in answerable + refusals}]
    if opts["rows"] == "preference":
        yield from as_preference(kept, opts, ledger)
    else:
        yield from (as_pair(item["row"]) if opts["rows"] == "pairs" else item["row"] for item in kept)
