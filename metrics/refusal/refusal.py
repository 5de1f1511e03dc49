"""Refusal-aware QA scores: does the model refuse exactly when the evidence does not answer the question,
and does it give an acceptable answer when it does not refuse?

How every number is defined:

- Normalisation: Unicode NFKC, lowercase, then every whitespace and punctuation character (Unicode category
  P*, which covers Chinese punctuation such as ，。！？；：、“”‘’（）) removed.
- A row should refuse when its list of acceptable answers is empty; it has an answer otherwise.
  answerable = rows - should_refuse.
- A row is refused when its normalised prediction contains any normalised refusal phrase.
- refusal_precision = refused rows that should refuse / refused rows.
- refusal_recall = refused rows that should refuse / rows that should refuse.
- over_refusal_rate = refused rows that have an answer / rows that have an answer.
- answer_match = answerable rows NOT refused whose normalised prediction contains any normalised acceptable
  answer / answerable rows not refused.
- With `kinds` (one per row: the kind of evidence a refusal row holds, e.g. given, swap, hard_negative;
  anything for answerable rows), refusal_recall_<kind> = refused rows of that kind / rows of that kind that
  should refuse, with the count should_refuse_<kind>, for each kind among the rows that should refuse.
- Each is a percentage rounded to 2 decimals, and 0.0 when its denominator is 0; the counts rows,
  should_refuse, refused and answerable_not_refused are returned so a reader can tell a true 0.0 from an
  empty denominator.
"""
import unicodedata

import datasets
import evaluate

_DESCRIPTION = __doc__

_CITATION = """\
@misc{tunepipe-refusal,
  title={Refusal-aware QA scores},
  note={Defined in the tunepipe project's metrics/refusal module},
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated answers.
    references: list of lists of acceptable answers; an empty list means the right output is a refusal.
    refusal_phrases: non-empty list of phrases that mark a refusal.
    kinds (optional): one string per row naming the kind of a refusal row's evidence.
Returns:
    refusal_precision, refusal_recall, over_refusal_rate, answer_match: percentages rounded to 2 decimals;
    rows, should_refuse, refused, answerable_not_refused: counts.
Examples:
    >>> refusal = evaluate.load("metrics/refusal")
    >>> scores = refusal.compute(predictions=["无法回答。"], references=[[]], refusal_phrases=["无法回答"])
    >>> scores["refusal_recall"]
    100.0
"""


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if not (ch.isspace() or unicodedata.category(ch).startswith("P")))


def percent(numerator: int, denominator: int) -> float:
    return round(100 * numerator / denominator, 2) if denominator else 0.0


def normalised_phrases(phrases: list[str], what: str) -> list[str]:
    # an empty phrase is contained in every text, so it would match every row
    normalised = [normalise(p) for p in phrases]
    if "" in normalised:
        raise ValueError(f"{what} {phrases[normalised.index('')]!r} is empty once whitespace and punctuation go")
    return normalised


class Refusal(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references, refusal_phrases=None, kinds=None):
        if not refusal_phrases or isinstance(refusal_phrases, str):
            raise ValueError("refusal_phrases must be a non-empty list of strings")
        if kinds is not None and len(kinds) != len(predictions):
            raise ValueError(f"kinds has {len(kinds)} entries for {len(predictions)} predictions")
        phrases = normalised_phrases(refusal_phrases, "refusal phrase")
        should_refuse = refused = refused_correctly = over_refused = answerable_not_refused = matched = 0
        per_kind = {}  # kind -> [rows that should refuse, of them refused]
        for row, (prediction, answers) in enumerate(zip(predictions, references)):
            text = normalise(prediction)
            is_refused = any(p in text for p in phrases)
            refused += is_refused
            if not answers:
                should_refuse += 1
                refused_correctly += is_refused
                if kinds is not None:
                    if not isinstance(kinds[row], str) or not kinds[row]:
                        raise ValueError(f"row {row} should be refused but its kind is {kinds[row]!r}")
                    counts = per_kind.setdefault(kinds[row], [0, 0])
                    counts[0] += 1
                    counts[1] += is_refused
            elif is_refused:
                over_refused += 1
            else:
                answerable_not_refused += 1
                matched += any(a in text for a in normalised_phrases(answers, f"row {row}: acceptable answer"))
        return {
            "refusal_precision": percent(refused_correctly, refused),
            "refusal_recall": percent(refused_correctly, should_refuse),
            "over_refusal_rate": percent(over_refused, len(predictions) - should_refuse),
            "answer_match": percent(matched, answerable_not_refused),
            "rows": len(predictions),
            "should_refuse": should_refuse,
            "refused": refused,
            "answerable_not_refused": answerable_not_refused,
            **{f"refusal_recall_{kind}": percent(hit, total) for kind, (total, hit) in sorted(per_kind.items())},
            **{f"should_refuse_{kind}": total for kind, (total, _) in sorted(per_kind.items())},
        }
