"""Perplexity of a language model on held-out text: how surprised it is by each token it should produce.

How every number is defined:

- Each scored row gives the summed negative log-likelihood (natural log) of its labelled tokens and how many
  there are: for plain text every token after the first, for a prompt and answer the answer's tokens only
  (the same tokens the training loss counts). The predict stage computes both, in float32.
- loss = the sum of every row's negative log-likelihood / the number of labelled tokens over all rows (a
  per-token mean over the whole split, so long rows weigh as much as their tokens, not more).
- perplexity = exp(loss), rounded to 4 decimals; loss rounded to 6.
- tokens = the number of labelled tokens scored. Lower loss and perplexity are better; `gain` in the scores
  is after minus before, so an improvement shows as a negative gain.
"""
import math

import datasets
import evaluate

_DESCRIPTION = __doc__

_CITATION = """\
@misc{tunepipe-perplexity,
  title={Token-level perplexity},
  note={Defined in the tunepipe project's metrics/perplexity module},
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"nll": summed negative log-likelihood of a row's labelled tokens, "tokens": their count}.
    references: the text each row's tokens come from (shown beside the prediction; not used in the numbers).
Returns:
    perplexity, loss: over all labelled tokens of all rows; tokens: how many were scored.
Examples:
    >>> perplexity = evaluate.load("metrics/perplexity")
    >>> perplexity.compute(predictions=[{"nll": 2.0, "tokens": 2}], references=["a b"])["perplexity"]
    2.7183
"""


class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": {"nll": datasets.Value("float64"), "tokens": datasets.Value("int64")},
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        if not predictions:
            raise ValueError("no rows to score")
        tokens = sum(int(p["tokens"]) for p in predictions)
        if tokens <= 0:
            raise ValueError("no labelled tokens to score")
        loss = sum(float(p["nll"]) for p in predictions) / tokens
        return {"perplexity": round(math.exp(loss), 4), "loss": round(loss, 6), "tokens": tokens}
