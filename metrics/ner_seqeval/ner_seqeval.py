"""Entity-level precision, recall and F1, and token accuracy, for IOB2 tag sequences (through seqeval).

How every number is defined:

- An entity is a maximal span of tags of one type. In the default mode (conlleval's rules, seqeval's
  default) a span starts at `B-X`, at an `I-X` that follows `O` or a tag of another type, and at a change of
  type; it ends before the next start, an `O`, or a type change. So `B-protein I-protein B-protein` is two
  entities, and `B-DNA I-DNA I-protein` (a nested annotation flattened to IOB2) is a DNA entity and a protein
  entity. With `mode="strict"` (seqeval's IOB2 scheme) a span must start with `B-X` and continue with `I-X`
  of the same type; a tag that breaks this belongs to no entity.
- A predicted entity is correct only if a reference entity has the same type, the same start and the same
  end, in the same sentence: a wrong boundary earns no partial credit.
- precision = correct entities / predicted entities; recall = correct entities / reference entities;
  f1 = 2 * precision * recall / (precision + recall), counted over all sentences together (micro average).
  Each is 0.0 when its denominator is 0 (for example when neither side has any entity).
- accuracy = tokens whose predicted tag equals the reference tag / all tokens (`O` tokens included).
- All four are fractions in [0, 1] rounded to 4 decimals. entities_predicted and entities_true are the
  entity counts of predictions and references under the chosen mode.
"""
import datasets
import evaluate
from seqeval.metrics import accuracy_score
from seqeval.metrics import f1_score
from seqeval.metrics import precision_score
from seqeval.metrics import recall_score
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2
from seqeval.scheme import Entities

_DESCRIPTION = __doc__

_CITATION = """\
@misc{seqeval,
  title={{seqeval}: A Python framework for sequence labeling evaluation},
  url={https://github.com/chakki-works/seqeval},
  note={Software available from https://github.com/chakki-works/seqeval},
  author={Hiroki Nakayama},
  year={2018},
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted tag lists, one per sentence.
    references: list of reference tag lists; each the same length as its prediction.
    mode: None (default, conlleval rules) or "strict" (IOB2 scheme).
Returns:
    precision, recall, f1, accuracy: fractions rounded to 4 decimals.
    entities_predicted, entities_true: entity counts.
Examples:
    >>> ner = evaluate.load("metrics/ner_seqeval")
    >>> ner.compute(predictions=[["B-DNA", "O"]], references=[["B-DNA", "O"]])["f1"]
    1.0
"""


def count_entities(sentences: list[list[str]], mode: str | None) -> int:
    if mode == "strict":
        return sum(len(spans) for spans in Entities(sentences, IOB2).entities)
    return len(get_entities(sentences))


class NerSeqeval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            codebase_urls=["https://github.com/chakki-works/seqeval"],
        )

    def _compute(self, predictions, references, mode=None):
        if mode not in (None, "strict"):
            raise ValueError(f"mode must be None or 'strict', got {mode!r}")
        if not predictions:
            raise ValueError("no rows to score")
        for row, (predicted, true) in enumerate(zip(predictions, references)):
            if len(predicted) != len(true):
                raise ValueError(f"row {row}: {len(predicted)} predicted tags but {len(true)} reference tags")
        # zero_division=0: the 0.0 the docstring promises, without seqeval's warning
        options = {"mode": mode, "scheme": IOB2 if mode == "strict" else None, "zero_division": 0}
        return {
            # float(): seqeval returns numpy floats, which print and serialise oddly downstream
            "precision": round(float(precision_score(references, predictions, **options)), 4),
            "recall": round(float(recall_score(references, predictions, **options)), 4),
            "f1": round(float(f1_score(references, predictions, **options)), 4),
            "accuracy": round(float(accuracy_score(references, predictions)), 4),
            "entities_predicted": count_entities(predictions, mode),
            "entities_true": count_entities(references, mode),
        }
