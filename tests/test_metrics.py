"""The project's `evaluate` metric modules (metrics/<name>/<name>.py), loaded by path, on hand-computed cases."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    import evaluate  # ~5 s to import, so only when a metric test runs

    return evaluate.load(str(REPO / "metrics" / name))


def module_of(metric):
    # evaluate imports the script as a module; its helper functions live there
    return importlib.import_module(type(metric).__module__)


@pytest.fixture(scope="module")
def rouge():
    return load("rouge_any")


@pytest.fixture(scope="module")
def ner():
    return load("ner_seqeval")


@pytest.fixture(scope="module")
def label_match():
    return load("label_match")


@pytest.fixture(scope="module")
def refusal():
    return load("refusal")


# ---- rouge_any ----


def test_rouge_matches_hand_computed_values(rouge):
    # "the cat sat" vs "the cat sat on the mat": unigrams P=3/3 R=3/6 -> F=2/3;
    # bigrams P=2/2 R=2/5 -> F=4/7; longest common subsequence 3 -> F=2/3
    scores = rouge.compute(predictions=["the cat sat"], references=[["the cat sat on the mat"]], use_stemmer=False)
    assert scores == {"rouge1": 66.67, "rouge2": 57.14, "rougeL": 66.67, "rougeLsum": 66.67}


def test_several_references_score_against_the_best_one_and_rows_are_averaged(rouge):
    scores = rouge.compute(
        predictions=["the cat sat", "nothing shared here"],
        references=[["a dog barked loudly", "the cat sat on the mat"], ["completely different words"]],
        use_stemmer=False,
    )
    assert scores["rouge1"] == 33.33  # (2/3 against the best reference + 0) / 2


def test_stemming_counts_inflections_as_matches(rouge):
    # with the stemmer both sides are "dog bark"; without it no word is shared
    for use_stemmer, expected in [(True, 100.0), (False, 0.0)]:
        scores = rouge.compute(predictions=["dogs barking"], references=[["dog barks"]], use_stemmer=use_stemmer)
        assert scores["rouge1"] == expected


def test_english_scores_equal_plain_rouge_score(rouge):
    from rouge_score import rouge_scorer

    prediction, reference = "Prices rose 3.5% in May, analysts said.", "Analysts said prices were rising in May!"
    plain = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(reference, prediction)
    scores = rouge.compute(predictions=[prediction], references=[[reference]])
    assert {name: scores[name] for name in plain} == {name: round(100 * s.fmeasure, 2) for name, s in plain.items()}


def test_chinese_scores_character_by_character(rouge):
    # tokens: 长 江 vs 长 江 是 中 国 最 长 的 河 流 (10).
    # rouge1: overlap 2 (长 once, 江 once), P=2/2 R=2/10 -> F=2*1*0.2/1.2=1/3.
    # rouge2: 长江 is one of the 9 reference bigrams, P=1/1 R=1/9 -> F=(2/9)/(10/9)=0.2.
    # rougeL: LCS 长江 = 2 -> same as rouge1; one sentence, so rougeLsum = rougeL.
    scores = rouge.compute(predictions=["长江"], references=[["长江是中国最长的河流"]])
    assert scores == {"rouge1": 33.33, "rouge2": 20.0, "rougeL": 33.33, "rougeLsum": 33.33}


def test_mixed_chinese_and_english_with_stemming(rouge):
    # tokens with the stemmer: dog 跑 得 快 vs dog 跑 得 很 快.
    # rouge1: overlap 4, P=4/4 R=4/5 -> F=8/9. rouge2: dog跑 跑得 match of 3 vs 4 bigrams,
    # P=2/3 R=2/4 -> F=4/7. rougeL: LCS dog 跑 得 快 = 4 -> 8/9.
    scores = rouge.compute(predictions=["Dogs跑得快"], references=[["dog跑得很快"]])
    assert scores == {"rouge1": 88.89, "rouge2": 57.14, "rougeL": 88.89, "rougeLsum": 88.89}
    # without the stemmer "dogs" != "dog": overlap 3, P=3/4 R=3/5 -> F=2/3
    assert rouge.compute(predictions=["Dogs跑得快"], references=[["dog跑得很快"]], use_stemmer=False)["rouge1"] == 66.67


def test_words_of_other_scripts_are_kept_whole(rouge):
    # tokens [москва, столица] vs [москва, большая]: overlap 1, P = R = 1/2 -> 50 (plain rouge-score drops
    # every Cyrillic letter and scores 0). "café" stays one token (rouge-score would keep only "caf").
    assert rouge.compute(predictions=["Москва столица"], references=[["москва большая"]])["rouge1"] == 50.0
    assert rouge.compute(predictions=["un café noir"], references=[["café"]], use_stemmer=False)["rouge1"] == 50.0


def test_lsum_compares_sentence_by_sentence(rouge):
    # the same two sentences in the other order. Tokens 猫 坐 着 狗 跑 了 vs 狗 跑 了 猫 坐 着:
    # rouge1 6/6 -> 100; rouge2 4 of 5 bigrams shared (not 着狗 / 了猫) -> 80;
    # rougeL: LCS over the whole text is 3 -> 3/6 = 50; rougeLsum: each reference sentence is
    # fully covered by one predicted sentence -> 6/6 = 100 (it would equal rougeL without the split).
    pairs = [("猫坐着。狗跑了。", "狗跑了。猫坐着。"), ("the cat sat. the dog ran.", "the dog ran. the cat sat.")]
    for prediction, reference in pairs:
        scores = rouge.compute(predictions=[prediction], references=[[reference]])
        assert scores == {"rouge1": 100.0, "rouge2": 80.0, "rougeL": 50.0, "rougeLsum": 100.0}


def test_sentence_splitting(rouge):
    sentence_lines = module_of(rouge).sentence_lines
    assert sentence_lines("They meet. Then they part! Why?") == "They meet.\nThen they part!\nWhy?"
    assert sentence_lines("他来了。她走了！为什么？") == "他来了。\n她走了！\n为什么？"
    assert sentence_lines("line one\n\n  line two") == "line one\nline two"
    assert sentence_lines("It costs 3.5 dollars.") == "It costs 3.5 dollars."


def test_rouge_row_without_reference_is_an_error(rouge):
    with pytest.raises(ValueError, match="^row 1: no reference to score against$"):
        rouge.compute(predictions=["a", "b"], references=[["a"], []])


# ---- ner_seqeval ----


def test_ner_micro_scores_over_sentences(ner):
    # true entities: protein(0-1), DNA(3), cell_type(0) = 3; predicted: protein(0-1), RNA(3), cell_type(0) = 3;
    # 2 correct -> P = R = F = 2/3. Tokens: 5 of 6 tags equal -> accuracy 5/6.
    scores = ner.compute(
        predictions=[["B-protein", "I-protein", "O", "B-RNA"], ["B-cell_type", "O"]],
        references=[["B-protein", "I-protein", "O", "B-DNA"], ["B-cell_type", "O"]],
    )
    assert scores == {
        "precision": 0.6667, "recall": 0.6667, "f1": 0.6667, "accuracy": 0.8333,
        "entities_predicted": 3, "entities_true": 3,
    }


def test_adjacent_entities_of_one_type_are_two_entities(ner):
    gold = [["B-protein", "I-protein", "B-protein"]]
    assert ner.compute(predictions=gold, references=gold) == {
        "precision": 1.0, "recall": 1.0, "f1": 1.0, "accuracy": 1.0, "entities_predicted": 2, "entities_true": 2,
    }
    # merging them into one span protein(0-2) matches neither: P=0/1, R=0/2; 2 of 3 tags right
    merged = ner.compute(predictions=[["B-protein", "I-protein", "I-protein"]], references=gold)
    assert merged == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.6667, "entities_predicted": 1, "entities_true": 2,
    }


def test_type_change_mid_span_from_a_flattened_nested_annotation(ner):
    gold = [["B-DNA", "I-DNA", "I-protein"]]
    predicted = [["B-DNA", "I-DNA", "B-protein"]]
    # default mode: I-protein after I-DNA starts a protein entity, so gold is DNA(0-1) + protein(2),
    # the same entities as predicted -> 1.0; tags: 2 of 3 equal (I-protein != B-protein)
    assert ner.compute(predictions=predicted, references=gold) == {
        "precision": 1.0, "recall": 1.0, "f1": 1.0, "accuracy": 0.6667, "entities_predicted": 2, "entities_true": 2,
    }
    # strict IOB2: I-protein cannot start an entity, so gold is DNA(0-1) only: P=1/2, R=1/1, F=2/3
    assert ner.compute(predictions=predicted, references=gold, mode="strict") == {
        "precision": 0.5, "recall": 1.0, "f1": 0.6667, "accuracy": 0.6667, "entities_predicted": 2, "entities_true": 1,
    }


def test_wrong_span_boundary_earns_no_partial_credit(ner):
    # DNA(0) predicted vs DNA(0-1) true: 0 correct of 1 and 1; tags: 2 of 3 equal
    scores = ner.compute(predictions=[["B-DNA", "O", "O"]], references=[["B-DNA", "I-DNA", "O"]])
    assert scores == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.6667, "entities_predicted": 1, "entities_true": 1,
    }


def test_all_outside_tags(ner):
    # no entity on either side: every entity ratio has a zero denominator -> 0.0; every tag equal -> accuracy 1
    scores = ner.compute(predictions=[["O", "O"], ["O"]], references=[["O", "O"], ["O"]])
    assert scores == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 1.0, "entities_predicted": 0, "entities_true": 0,
    }


def test_default_and_strict_mode_on_an_entity_starting_with_i(ner):
    gold = [["B-protein", "I-protein", "O"]]
    predicted = [["I-protein", "I-protein", "O"]]
    # default: I-protein after nothing starts protein(0-1), which matches; tags 2 of 3 equal
    assert ner.compute(predictions=predicted, references=gold) == {
        "precision": 1.0, "recall": 1.0, "f1": 1.0, "accuracy": 0.6667, "entities_predicted": 1, "entities_true": 1,
    }
    # strict: the predicted span is invalid IOB2, so nothing is predicted: P=0 (0/0), R=0/1
    assert ner.compute(predictions=predicted, references=gold, mode="strict") == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.6667, "entities_predicted": 0, "entities_true": 1,
    }


def test_ner_length_mismatch_names_the_row(ner):
    with pytest.raises(ValueError, match="row 1: 1 predicted tags but 2 reference tags"):
        ner.compute(predictions=[["O"], ["O"]], references=[["O"], ["O", "O"]])
    with pytest.raises(ValueError, match="^mode must be None or 'strict', got 'lenient'$"):
        ner.compute(predictions=[["O"]], references=[["O"]], mode="lenient")


# ---- label_match ----

PARAPHRASE_WORDS = {"equivalent": ["yes", "same"], "not_equivalent": ["no", "different", "not the same"]}


def test_accuracy_and_macro_f1_with_an_unparseable_row(label_match):
    # parsed: positive, negative, positive, None, negative -> rows 0, 1, 4 right: accuracy 3/5.
    # positive tp=1 fp=1 (row 2) fn=1 (row 3) -> 2/4; negative tp=2 -> 1; neutral tp=0 fn=1 -> 0;
    # macro (0.5 + 1 + 0) / 3 = 0.5
    scores = label_match.compute(
        predictions=["Positive.", "negative", "I think it's positive", "no idea", "NEGATIVE!!"],
        references=["positive", "negative", "neutral", "positive", "negative"],
    )
    assert scores == {"accuracy": 60.0, "macro_f1": 50.0, "unparseable": 1, "rows": 5}


def test_binary_f1_of_the_positive_label_with_synonyms(label_match):
    # parsed: equivalent ("yes"), not_equivalent ("not the same"), not_equivalent, equivalent ("same"), None,
    # not_equivalent
    # right: rows 0, 2, 5 -> 3/6. equivalent tp=1 fp=1 (row 3) fn=2 (rows 1, 4) -> 2/5 = 0.4;
    # not_equivalent tp=2 fp=1 (row 1) fn=1 (row 3) -> 4/6; macro (0.4 + 2/3) / 2 = 0.5333
    scores = label_match.compute(
        predictions=["Yes.", "They are not the same.", "different", "The same", "maybe", "No"],
        references=["equivalent", "equivalent", "not_equivalent", "not_equivalent", "equivalent", "not_equivalent"],
        label_words=PARAPHRASE_WORDS,
        positive_label="equivalent",
    )
    assert scores == {"accuracy": 50.0, "macro_f1": 53.33, "f1": 40.0, "unparseable": 1, "rows": 6}


def test_head_predictions_scored_over_labels_seen_in_references_or_predictions(label_match):
    # right: rows 0, 1 -> 2/3. positive tp=1 fn=1 -> 2/3; negative tp=1 fp=1 -> 2/3; neutral (in `labels`,
    # never a reference nor a prediction) is not averaged, as in scikit-learn: macro (2/3 + 2/3) / 2 = 2/3
    scores = label_match.compute(
        predictions=["positive", "negative", "negative"],
        references=["positive", "negative", "positive"],
        labels=["positive", "negative", "neutral"],
        positive_label="positive",
    )
    assert scores == {"accuracy": 66.67, "macro_f1": 66.67, "f1": 66.67, "unparseable": 0, "rows": 3}
    # a head may predict a label no test row has: it parses (via `labels`) and joins the average with F1 0
    # positive 2/3 (tp 1, fn 1), negative 1 (tp 1), neutral 0 (fp 1): macro 5/9
    scores = label_match.compute(
        predictions=["positive", "negative", "neutral"],
        references=["positive", "negative", "positive"],
        labels=["positive", "negative", "neutral"],
    )
    assert scores == {"accuracy": 66.67, "macro_f1": 55.56, "unparseable": 0, "rows": 3}


def test_accuracy_per_kind_counts_only_that_kind_s_rows(label_match):
    # a gate's pairs: two swaps (one refused), two hard negatives (none refused), two answerable rows (no kind)
    predictions = ["refuse", "answerable", "answerable", "answerable", "answerable", "refuse"]
    references = ["refuse", "refuse", "refuse", "refuse", "answerable", "answerable"]
    kinds = ["swap", "swap", "hard_negative", "hard_negative", None, None]
    scores = label_match.compute(predictions=predictions, references=references, kinds=kinds)
    assert {k: v for k, v in scores.items() if k.endswith(("_swap", "_hard_negative"))} == {
        "accuracy_hard_negative": 0.0, "accuracy_swap": 50.0, "rows_hard_negative": 2, "rows_swap": 2}
    assert scores["accuracy"] == 33.33 and "accuracy_None" not in scores  # 2 of 6; rows of no kind: no line
    with pytest.raises(ValueError, match="kinds has 1 entries for 6 predictions"):
        label_match.compute(predictions=predictions, references=references, kinds=["swap"])


def test_all_unparseable_rows_are_wrong(label_match):
    scores = label_match.compute(predictions=["maybe", "?"], references=["positive", "negative"])
    assert scores == {"accuracy": 0.0, "macro_f1": 0.0, "unparseable": 2, "rows": 2}


def test_parse_label_normalises_case_whitespace_punctuation_and_synonyms(label_match):
    parse_label = module_of(label_match).parse_label
    assert parse_label("  YES!!  ", PARAPHRASE_WORDS) == "equivalent"
    assert parse_label("Ｙｅｓ", PARAPHRASE_WORDS) == "equivalent"  # full width, NFKC
    assert parse_label("Different\n\tsentences", PARAPHRASE_WORDS) == "not_equivalent"
    assert parse_label("NOT-THE-SAME", PARAPHRASE_WORDS) == "not_equivalent"
    assert parse_label("Not equivalent.", PARAPHRASE_WORDS) == "not_equivalent"  # the label's own name
    assert parse_label("not_equivalent", PARAPHRASE_WORDS) == "not_equivalent"
    assert parse_label("yesterday, sameness", PARAPHRASE_WORDS) is None  # whole words only
    assert parse_label("", PARAPHRASE_WORDS) is None


def test_parse_label_takes_the_first_position_and_the_longest_phrase_there(label_match):
    parse_label = module_of(label_match).parse_label
    assert parse_label("They are not the same.", PARAPHRASE_WORDS) == "not_equivalent"
    assert parse_label("They are the same.", PARAPHRASE_WORDS) == "equivalent"
    assert parse_label("Positive, not negative", {"positive": [], "negative": []}) == "positive"


def test_label_match_rejects_bad_options(label_match):
    with pytest.raises(ValueError, match=r"^positive_label 'entailment' is not one of the labels \['equivalent'\]$"):
        label_match.compute(predictions=["yes"], references=["equivalent"], positive_label="entailment")
    with pytest.raises(ValueError, match="means both"):
        label_match.compute(predictions=["yes"], references=["equivalent"], label_words={"a": ["yes"], "b": ["yes"]})


# ---- refusal ----

CHINESE_REFUSALS = ["根据提供的内容，我无法找到问题的相关信息", "无法回答"]


def test_refusal_scores_on_chinese_rows(refusal):
    predictions = [
        "根据提供的内容，我无法找到问题的相关信息。",  # should refuse, refused
        "根据提供的内容 我无法找到问题的相关信息",  # should refuse, refused (space for the comma)
        "长江。",  # should refuse, answered
        "抱歉，无法回答。",  # has an answer, refused
        "答案是长江。",  # has an answer, matches 长江
        "黄河",  # has an answer, matches nothing
        "我无法回答这个问题",  # has an answer, refused
        "扬子江",  # has an answer, matches 扬子江
    ]
    references = [[], [], [], ["长江"], ["长江", "扬子江"], ["长江"], ["长江"], ["长江", "扬子江"]]
    # refused: rows 0, 1, 3, 6 (4), of which should refuse 0, 1 (2); should refuse: rows 0, 1, 2 (3);
    # answerable: 5 rows, refused 3 and 6 (2); answerable not refused: 4, 5, 7, matched 4 and 7 (2).
    # precision 2/4, recall 2/3, over-refusal 2/5, answer match 2/3
    scores = refusal.compute(predictions=predictions, references=references, refusal_phrases=CHINESE_REFUSALS)
    assert scores == {
        "refusal_precision": 50.0, "refusal_recall": 66.67, "over_refusal_rate": 40.0, "answer_match": 66.67,
        "rows": 8, "should_refuse": 3, "refused": 4, "answerable_not_refused": 3,
    }


def test_refusal_recall_per_kind_counts_only_that_kind_s_refusal_rows(refusal):
    predictions = ["无法回答", "长江", "无法回答", "无法回答", "黄河", "长江"]
    references = [[], [], [], [], [], ["长江"]]
    kinds = ["swap", "swap", "hard_negative", "given", "hard_negative", None]  # answerable rows: any kind
    # swap: rows 0, 1, refused 0 (1/2); hard_negative: rows 2, 4, refused 2 (1/2); given: row 3, refused (1/1)
    scores = refusal.compute(predictions=predictions, references=references, refusal_phrases=CHINESE_REFUSALS,
                             kinds=kinds)
    assert {k: v for k, v in scores.items() if k.endswith(("_swap", "_hard_negative", "_given"))} == {
        "refusal_recall_given": 100.0, "refusal_recall_hard_negative": 50.0, "refusal_recall_swap": 50.0,
        "should_refuse_given": 1, "should_refuse_hard_negative": 2, "should_refuse_swap": 2}
    assert scores["refusal_recall"] == 60.0  # 3 of 5 overall, unchanged by kinds
    with pytest.raises(ValueError, match="row 1 should be refused but its kind is None"):
        refusal.compute(predictions=["x", "y"], references=[["x"], []], refusal_phrases=CHINESE_REFUSALS,
                        kinds=["swap", None])
    with pytest.raises(ValueError, match="kinds has 1 entries for 2 predictions"):
        refusal.compute(predictions=["x", "y"], references=[[], []], refusal_phrases=CHINESE_REFUSALS, kinds=["a"])


def test_refusal_zero_denominators_give_zero_and_the_counts_show_why(refusal):
    # nothing refused and nothing should refuse: precision 0/0, recall 0/0; 1 of 2 answers match
    scores = refusal.compute(
        predictions=["长江", "黄河"], references=[["长江"], ["长江"]], refusal_phrases=CHINESE_REFUSALS
    )
    assert scores == {
        "refusal_precision": 0.0, "refusal_recall": 0.0, "over_refusal_rate": 0.0, "answer_match": 50.0,
        "rows": 2, "should_refuse": 0, "refused": 0, "answerable_not_refused": 2,
    }
    # every row should refuse and does: 2/2 both ways; no answerable rows: over-refusal 0/0, answer match 0/0
    scores = refusal.compute(
        predictions=["无法回答", "无法回答。"], references=[[], []], refusal_phrases=CHINESE_REFUSALS
    )
    assert scores == {
        "refusal_precision": 100.0, "refusal_recall": 100.0, "over_refusal_rate": 0.0, "answer_match": 0.0,
        "rows": 2, "should_refuse": 2, "refused": 2, "answerable_not_refused": 0,
    }


def test_refusal_survives_punctuation_whitespace_and_case(refusal):
    predictions = [
        "根据提供的内容, 我无法找到问题的相关信息!",
        "根据 提供 的 内容 ， 我 无法 找到 问题 的 相关 信息",
        "“根据提供的内容；我无法找到问题的相关信息”",
        "（无法\n回答）",
        "I CANNOT   answer.",
        "Ｉ ｃａｎｎｏｔ, ａｎｓｗｅｒ",
        "I can answer: Paris",  # not a refusal
    ]
    scores = refusal.compute(
        predictions=predictions, references=[[]] * 7, refusal_phrases=[*CHINESE_REFUSALS, "I cannot answer"]
    )
    # the first 6 rows refuse, the last does not: recall 6/7
    assert (scores["refused"], scores["refusal_recall"]) == (6, 85.71)


def test_answer_match_is_normalised_too(refusal):
    scores = refusal.compute(
        predictions=["The capital is PARIS."], references=[["Paris"]], refusal_phrases=["I cannot answer"]
    )
    assert scores["answer_match"] == 100.0


def test_refusal_rejects_missing_or_empty_phrases(refusal):
    with pytest.raises(ValueError, match="non-empty list"):
        refusal.compute(predictions=["x"], references=[[]], refusal_phrases=[])
    with pytest.raises(ValueError, match="empty once"):
        refusal.compute(predictions=["x"], references=[[]], refusal_phrases=["。"])


# ---- perplexity ----

@pytest.fixture(scope="module")
def perplexity():
    return load("perplexity")


def test_perplexity_is_per_token_over_the_whole_split(perplexity):
    # two rows: 3 tokens with summed NLL 3.0 and 1 token with NLL 3.0: loss = 6 / 4 = 1.5 per token (a mean
    # of the rows' own means would be (1 + 3) / 2 = 2), perplexity = e^1.5 = 4.4817
    scores = perplexity.compute(predictions=[{"nll": 3.0, "tokens": 3}, {"nll": 3.0, "tokens": 1}], references=["a", "b"])
    assert scores == {"perplexity": 4.4817, "loss": 1.5, "tokens": 4}
    with pytest.raises(ValueError, match="^no labelled tokens to score$"):
        perplexity.compute(predictions=[{"nll": 0.0, "tokens": 0}], references=["a"])
