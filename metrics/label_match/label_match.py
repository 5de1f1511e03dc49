"""Accuracy and F1 of class labels, predicted by a classification head or parsed from generated text.

How every number is defined:

- Parsing a prediction. Text and label words are normalised: Unicode NFKC, lowercase, every punctuation
  character (Unicode category P*, which includes `_`) replaced by a space, runs of whitespace collapsed.
  A label's words are its own name (so `not_equivalent` is the phrase "not equivalent") plus the words or
  phrases `label_words` gives it. Scanning the prediction's words from left to right, the first word
  position where a label word matches as whole words decides the label; when several label words match at
  that position the longest wins ("not the same" beats "same"). No match anywhere: the prediction is
  unparseable.
- Labels a prediction can name: those of `labels` (the dataset's label set), the references' and
  `label_words`' keys. Scored labels: those that occur in the references or among the parsed predictions
  (scikit-learn's default), so a head and a language model are averaged over the same kind of set.
- accuracy = rows whose parsed label equals the reference label / rows. An unparseable row is wrong.
- Per label L: tp = rows predicted L with reference L, fp = rows predicted L with another reference,
  fn = rows with reference L not predicted L (unparseable rows included); F1(L) = 2tp / (2tp + fp + fn),
  0 when that denominator is 0. An unparseable row is thus a false negative of its reference label and a
  false positive of no label.
- macro_f1 = mean of F1(L) over the scored labels. f1 = F1(positive_label), only when positive_label is given.
- With `kinds` (one per row, e.g. the kind of evidence a WebQA pair holds; null for rows of no kind),
  accuracy_<kind> = rows of that kind whose parsed label equals the reference / rows of that kind, with the
  count rows_<kind>, for each kind named.
- accuracy, macro_f1 and f1 are percentages rounded to 2 decimals. unparseable = unparseable rows,
  rows = all rows.
"""
import unicodedata

import datasets
import evaluate

_DESCRIPTION = __doc__

_CITATION = """\
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O. and
          Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
          Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted labels or generated texts.
    references: list of gold labels.
    labels: optional list of every label of the dataset (a head may predict one no reference has).
    label_words: optional dict mapping each label to a list of words or phrases that mean it.
    positive_label: optional label whose F1 is reported as `f1`.
    kinds: optional list, one kind (a string, or None) per row: accuracy is also reported per kind.
Returns:
    accuracy, macro_f1 (and f1 with positive_label): percentages rounded to 2 decimals;
    unparseable, rows: counts.
Examples:
    >>> match = evaluate.load("metrics/label_match")
    >>> match.compute(predictions=["Yes."], references=["equivalent"],
    ...               label_words={"equivalent": ["yes"], "not_equivalent": ["no"]})["accuracy"]
    100.0
"""


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def parse_label(text: str, label_words: dict[str, list[str]]) -> str | None:
    """The label the text names first (longest phrase at that position), or None when it names none."""
    phrases: dict[tuple[str, ...], str] = {}
    for label, words in label_words.items():
        if isinstance(words, str):
            raise ValueError(f"label_words[{label!r}] must be a list of words, not the string {words!r}")
        for word in [label, *words]:
            phrase = tuple(normalise(word).split())
            if not phrase:
                raise ValueError(f"label word {word!r} of {label!r} is empty once punctuation is removed")
            if phrases.setdefault(phrase, label) != label:
                raise ValueError(f"label word {word!r} means both {phrases[phrase]!r} and {label!r}")
    tokens = normalise(text).split()
    lengths = sorted({len(p) for p in phrases}, reverse=True)
    for start in range(len(tokens)):
        for length in lengths:
            label = phrases.get(tuple(tokens[start : start + length]))
            if label is not None:
                return label
    return None


def f1_of(label: str, parsed: list[str | None], references: list[str]) -> float:
    tp = sum(p == label and r == label for p, r in zip(parsed, references))
    fp = sum(p == label and r != label for p, r in zip(parsed, references))
    fn = sum(p != label and r == label for p, r in zip(parsed, references))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


class LabelMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, labels=None, label_words=None, positive_label=None, kinds=None):
        if not predictions:
            raise ValueError("no rows to score")
        if kinds is not None and len(kinds) != len(predictions):
            raise ValueError(f"kinds has {len(kinds)} entries for {len(predictions)} predictions")
        words = {label: [] for label in [*(labels or []), *references]}
        words.update(label_words or {})
        if positive_label is not None and positive_label not in words:
            raise ValueError(f"positive_label {positive_label!r} is not one of the labels {sorted(words)}")
        parsed = [parse_label(text, words) for text in predictions]
        scored = sorted(set(references) | {p for p in parsed if p is not None})
        result = {
            "accuracy": round(100 * sum(p == r for p, r in zip(parsed, references)) / len(references), 2),
            "macro_f1": round(100 * sum(f1_of(label, parsed, references) for label in scored) / len(scored), 2),
        }
        if positive_label is not None:
            result["f1"] = round(100 * f1_of(positive_label, parsed, references), 2)
        result["unparseable"] = sum(p is None for p in parsed)
        result["rows"] = len(references)
        for kind in sorted({k for k in kinds or [] if k is not None}):
            rows = [(p, r) for p, r, k in zip(parsed, references, kinds) if k == kind]
            result[f"accuracy_{kind}"] = round(100 * sum(p == r for p, r in rows) / len(rows), 2)
            result[f"rows_{kind}"] = len(rows)
        return result
