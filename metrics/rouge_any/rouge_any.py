"""ROUGE-1/2/L/Lsum that scores any script: Chinese, Japanese and Korean, accented Latin, Cyrillic, ...

How every number is defined:

- Tokens. Text is NFKC-normalised (full-width letters and digits become ASCII). Every CJK ideograph, kana and
  hangul character is one token. The rest of the text is lowercased and split into words of letters and
  digits (any script; everything else, `_` included, separates). A word of ASCII letters and digits is
  tokenised exactly as rouge-score does (Porter-stemmed when `use_stemmer` is true and it is longer than 3
  characters); any other word (café, москва) is kept whole, where rouge-score would drop its letters.
  English text gets exactly the tokens plain rouge-score gives it.
- rouge1 / rouge2: F-measure of unigram / bigram overlap: overlap = sum over n-grams of
  min(count in prediction, count in reference); P = overlap / prediction n-grams, R = overlap / reference
  n-grams, F = 2PR / (P + R), 0 when the overlap is 0.
- rougeL: the same F-measure with overlap = length of the longest common subsequence of the two token lists.
- rougeLsum: summary-level LCS (rouge-score's definition) over sentences. A text is split into sentences
  after `.`, `!` or `?` followed by whitespace, after `。`, `！` or `？`, and at every line break.
- A row with several references scores, for each ROUGE type separately, against the reference with the
  highest F-measure of that type (rouge-score's `score_multi`).
- Each reported value is the mean over rows of the row's F-measure, times 100, rounded to 2 decimals.
"""
import re
import unicodedata

import datasets
import evaluate
from rouge_score import rouge_scorer
from rouge_score import tokenizers

ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]

# Letters only, so CJK punctuation (、。「」・) stays a separator: 々 〇, hiragana, katakana (with ー and the
# iteration marks), hangul jamo and syllables, CJK ideographs (Ext. A, unified, compatibility, Ext. B onwards).
# NFKC has already made half-width kana full width.
CJK_CHAR = re.compile(
    r"([\u3005\u3007\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff"
    r"\u1100-\u11ff\u3131-\u318e\uac00-\ud7a3"
    r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f])"
)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])\s*|\s*\n\s*")

_DESCRIPTION = __doc__

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/W04-1013",
    pages = "74--81",
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts, one per row.
    references: list of lists of reference texts; each row needs at least one.
    use_stemmer: bool, default True: Porter-stem ASCII words longer than 3 characters.
Returns:
    rouge1, rouge2, rougeL, rougeLsum: mean F-measure x100, rounded to 2 decimals.
Examples:
    >>> rouge = evaluate.load("metrics/rouge_any")
    >>> rouge.compute(predictions=["长江"], references=[["长江是中国最长的河流"]])["rouge1"]
    33.33
"""


WORD = re.compile(r"[^\W_]+")  # letters and digits of any script


class AnyScriptTokenizer:
    """One token per CJK character; words of other scripts whole; rouge-score's own tokenizer for ASCII."""

    def __init__(self, use_stemmer: bool):
        self._default = tokenizers.DefaultTokenizer(use_stemmer)

    def tokenize(self, text: str) -> list[str]:
        tokens = []
        # splitting on a capturing group keeps each CJK character as its own piece, between the other text
        for piece in CJK_CHAR.split(unicodedata.normalize("NFKC", text)):
            if CJK_CHAR.fullmatch(piece):
                tokens.append(piece)
                continue
            for word in WORD.findall(piece.lower()):
                tokens.extend(self._default.tokenize(word) if word.isascii() else [word])
        return tokens


def sentence_lines(text: str) -> str:
    # rouge-score's rougeLsum takes each line as one sentence
    return "\n".join(s for s in SENTENCE_END.split(text.strip()) if s)


class RougeAny(evaluate.Metric):
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
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(self, predictions, references, use_stemmer=True):
        if not predictions:
            raise ValueError("no rows to score")
        scorer = rouge_scorer.RougeScorer(ROUGE_TYPES, tokenizer=AnyScriptTokenizer(use_stemmer))
        totals = dict.fromkeys(ROUGE_TYPES, 0.0)
        for row, (prediction, targets) in enumerate(zip(predictions, references)):
            if not targets:
                raise ValueError(f"row {row}: no reference to score against")
            scores = scorer.score_multi([sentence_lines(t) for t in targets], sentence_lines(prediction))
            for name in ROUGE_TYPES:
                totals[name] += scores[name].fmeasure
        return {name: round(100 * total / len(predictions), 2) for name, total in totals.items()}
