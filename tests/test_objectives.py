"""Preference training through TRL: the objective table's checks, pairs tokenized as TRL tokenizes them
(the real SmolLM2 chat template), DPO on a tiny model learning a preference, and the reference model being
the one training starts from (init_from's SFT model, never the raw base by accident)."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from stages import tokenize as tokenize_stage
from stages import train as train_stage
from tests.conftest import REPO
from tests.test_chat_masks import smollm2  # noqa: F401  (a fixture: SmolLM2's own tokenizer)
from tests.test_kinds import workspace
from tests.workspace import edit, inside, read_yaml, write_experiment, write_yaml
from tunepipe.errors import StageError
from tunepipe.files import write_jsonl
from tunepipe.objectives import OBJECTIVES
from tunepipe.pairs import encode_pair

# one preference throughout (a short answer over a rambling one), which even a random tiny model can learn
PAIRS = [{"prompt": [{"role": "user", "content": f"Is {n} even?"}],
          "chosen": [{"role": "assistant", "content": "yes" if n % 2 == 0 else "no"}],
          "rejected": [{"role": "assistant", "content": "well, maybe, it depends"}]} for n in range(12)]


def test_each_objective_setting_is_a_field_of_its_trl_config_and_not_a_training_argument():
    import trl
    from transformers import TrainingArguments

    shared = {f.name for f in dataclasses.fields(TrainingArguments)}
    for name, objective in OBJECTIVES.items():
        own = {f.name for f in dataclasses.fields(getattr(trl, objective.config))} - shared
        assert set(objective.settings) <= own, f"{name}: {set(objective.settings) - own} are not {objective.config}'s"


@pytest.mark.parametrize("change, message", [
    ({"kind": "seq2seq"}, r"objective: 'dpo' trains a causal_lm with lora, qlora, full, not a seq2seq with lora"),
    ({"method": "prompt_tuning", "merge": None}, r"objective: 'dpo' .* not a causal_lm with prompt_tuning"),
    ({"train.dpo": {"gamma": 1}}, r"train.dpo: unknown gamma \(known: beta, loss_type"),
    ({"objective": "sft", "train.dpo": {"beta": 0.2}}, r"train.dpo: settings of the dpo objective, but objective is 'sft'"),
    ({"objective": "sft", "init_from": "toy"}, r"init_from: supported for a preference or reward objective"),
    ({"objective": "grpo", "metric": "perplexity"}, r"objective: grpo rewards completions with the experiment's "
                                                     r"metric on each one; 'perplexity' scores no single completion"),
])
def test_an_objective_that_does_not_fit_fails_naming_the_file_and_key(tmp_path, change, message):
    from tunepipe.settings.resolve import resolve

    workspace(tmp_path, "llama", "causal_lm", "lora")
    path = tmp_path / "experiments/toy.yaml"
    edit(path, "objective", "dpo")
    for key, value in change.items():
        edit(path, key, value)
    with pytest.raises(StageError, match=r"experiments/toy.yaml: " + message):
        resolve("toy", tmp_path)


def webqa_pairs() -> list[dict]:
    """The WebQA sample's rows as the converter writes them for DPO: answers over refusals and back, Chinese."""
    from tunepipe.formats.webqa import read
    from tunepipe.ledger import Ledger

    rows = list(read(REPO / "data/samples/webqa", {"rows": "preference", "answerable_ratio": 1.0,
                                                   "hard_negatives": "auto", "synthesize_refusals": "auto"}, Ledger("t")))
    return [next(r for r in rows if r["refusal_kind"] == kind) for kind in (None, "given", "swap", "hard_negative")]


@pytest.mark.parametrize("shape", ["conversational", "standard", "webqa"])
def test_tokenized_pairs_equal_trl_s_own_processing_on_smollm2(smollm2, shape):  # noqa: F811
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = PAIRS[:4] if shape == "conversational" else [
        {k: row[k] for k in ("prompt", "chosen", "rejected")} for row in webqa_pairs()] if shape == "webqa" else [
        {"prompt": f"Question: is {n} even?\nAnswer:", "chosen": " yes", "rejected": " no, it is odd"} for n in range(4)]
    rows.append({**rows[0], "prompt": rows[0]["prompt"] * 2})  # a longer prompt, the same answers
    # TRL's own preparation, called on its own (it reads nothing of the trainer but the tokenizer)
    trainer = type("Prepares", (), {"_tokenizer": smollm2})()
    theirs = DPOTrainer._prepare_dataset(trainer, Dataset.from_list(rows), smollm2,
                                         DPOConfig(output_dir="unused", max_length=None, report_to="none", bf16=False), "train")
    ours = [encode_pair(smollm2, row, {}) for row in rows]
    assert [{k: row[k] for k in ours[0]} for row in theirs] == ours
    assert all(row["chosen_ids"] and row["rejected_ids"] and row["prompt_ids"] for row in ours)


def preference_workspace(root: Path, start_from_sft: bool, objective: str = "dpo") -> str:
    """The tiny llama, an SFT experiment on instructions and a preference one (DPO, or KTO: each pair as two
    rows) on pairs; both LoRA."""
    workspace(root, "llama", "causal_lm", "lora")  # the SFT experiment `toy`
    registry = read_yaml(root / "params.yaml")
    registry["datasets"]["pairs"] = {"path": "raw", "format": "preference"}
    write_yaml(root / "params.yaml", registry)
    converted = root / "data/converted/pairs"
    # validation on pairs it trains on: a random tiny model cannot generalise, but it can learn what it is shown
    for split, rows in (("train", PAIRS[:8]), ("validation", PAIRS[:4]), ("test", PAIRS[11:])):
        write_jsonl(converted / f"{split}.jsonl", [{**row, "id": f"{split}-{n}", "kind": "preference", "split": split}
                                                  for n, row in enumerate(rows)])
    (converted / "labels.json").write_text("[]")
    spec = read_yaml(root / "experiments/toy.yaml")
    spec.update(dataset="pairs", objective=objective, **({"init_from": "toy"} if start_from_sft else {}))
    spec["train"].update(max_steps=6, eval_steps=1, batch_size=8, learning_rate=0.05, **{objective: {"beta": 0.5}})
    return write_experiment(root, objective, spec)


def after_sft(root: Path, objective: str = "dpo") -> str:
    """The workspace with both experiments tokenized and the SFT one trained: the preference run's start."""
    name = preference_workspace(root, start_from_sft=True, objective=objective)
    for experiment in ("toy", name):
        tokenize_stage.main([experiment])
    train_stage.main(["toy"])
    return name


def test_dpo_learns_the_preference_and_its_reference_is_the_model_it_starts_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = after_sft(tmp_path)
    dpo = train_stage.main([name])
    summary = json.loads(Path(f"reports/train/{name}/summary.json").read_text())
    # step 1's loss is -log sigmoid(0) = log 2 exactly when the reference is the model training starts from
    assert summary["first_loss"] == 0.693147
    assert summary["final_eval_reward_accuracies"] > 0.5 > summary["first_eval_reward_accuracies"]
    assert summary["final_eval_reward_margins"] > max(summary["first_eval_reward_margins"], 0)
    # saved: the policy's adapter alone (TRL's frozen "ref" copy is not part of the result), the one trained
    from safetensors.torch import load_file

    saved = load_file(f"models/trained/{name}/adapter_model.safetensors")
    assert not any(".ref." in key for key in saved) and not Path(f"models/trained/{name}/ref").exists()
    policy = {k: v for k, v in dpo.state_dict().items() if ".default." in k}
    assert len(saved) == len(policy) and not torch.equal(*(next(iter(d.values())) for d in (
        load_file("models/trained/toy/adapter_model.safetensors"), saved)))  # it moved from the SFT's


def summed_logps(model, batch: dict) -> torch.Tensor:
    """Each sequence's log-probability of its answer tokens, computed by hand."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    picked = logits.float().log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    return (picked * batch["completion_mask"][:, 1:]).sum(-1)


def test_the_reference_is_init_from_s_sft_model_and_not_the_raw_base(tmp_path, monkeypatch):
    from datasets import load_from_disk

    from tunepipe import training
    from tunepipe.loading import load_base, load_tokenizer, load_trained
    from tunepipe.preference_training import build_preference_trainer, load_start, reference_logps
    from tunepipe.settings import load_experiment

    monkeypatch.chdir(tmp_path)
    name = after_sft(tmp_path)
    setup = load_experiment(name, "train")
    params, base = setup.pop("train"), Path("models/base/tiny")
    rows = load_from_disk(f"data/tokenized/{name}/train").remove_columns("id")
    args = training.training_arguments(params, setup, tmp_path / "scratch", evaluate=False, precision="fp32")
    trainer = build_preference_trainer(load_start(setup, base, "float32"), args, setup, load_tokenizer(base), rows,
                                       None, [])
    batch = trainer.data_collator([rows[0], rows[1]])
    reference = torch.cat(reference_logps(trainer, batch))
    sft, raw = (summed_logps(model.eval(), batch) for model in (
        load_trained(base, Path("models/trained/toy")), load_base("causal_lm", base)))
    assert torch.allclose(reference, sft, atol=1e-4)
    assert (reference - raw).abs().max() > 100 * (reference - sft).abs().max()  # two steps of SFT tell them apart


def test_kto_reads_each_pair_as_two_rows_and_learns_from_the_labels(tmp_path, monkeypatch):
    from datasets import load_from_disk

    monkeypatch.chdir(tmp_path)
    name = after_sft(tmp_path, objective="kto")
    rows = load_from_disk(f"data/tokenized/{name}/train")
    # as TRL unpairs them: the chosen answers, then the rejected ones (a row's KL neighbour is another prompt's)
    assert rows.num_rows == 16 and rows["label"] == [True] * 8 + [False] * 8
    assert rows["id"][:2] == ["train-0#chosen", "train-1#chosen"] and rows["id"][8] == "train-0#rejected"
    train_stage.main([name])
    summary = json.loads(Path(f"reports/train/{name}/summary.json").read_text())
    # KTO's loss starts at 1 - sigmoid(0) = 0.5 exactly when the reference is the model training starts from
    assert summary["first_loss"] == 0.5
    assert summary["final_eval_reward_margins"] > max(summary["first_eval_reward_margins"], 0)
    assert "final_eval_reward_accuracies" not in summary  # KTO has no pairs to be right about


def test_unpaired_rows_equal_trl_s_own_kto_processing_on_smollm2(smollm2):  # noqa: F811
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from tunepipe.pairs import encode_unpaired

    rows = [{"prompt": PAIRS[0]["prompt"], "completion": PAIRS[0]["chosen"], "label": True},
            {"prompt": PAIRS[1]["prompt"], "completion": PAIRS[1]["rejected"], "label": False},
            {"prompt": "Question: is 3 even?\nAnswer:", "completion": " no", "label": True}]
    trainer = type("Prepares", (), {"_tokenizer": smollm2, "calculate_KL": False, "desirable_weight": 1.0,
                                    "undesirable_weight": 1.0})()
    config = KTOConfig(output_dir="unused", max_length=None, report_to="none", bf16=False)
    theirs = [KTOTrainer._prepare_dataset(trainer, Dataset.from_list([row]), smollm2, config, "eval")[0] for row in rows]
    ours = encode_unpaired(smollm2, rows, {}, [])
    assert [{k: row[k] for k in ("prompt_ids", "completion_ids", "label")} for row in theirs] == [
        {k: row[k] for k in ("prompt_ids", "completion_ids", "label")} for row in ours]


def test_grpo_rewards_are_the_task_s_metric_on_each_completion_and_a_format_reward():
    from tunepipe.rewards import reward_functions

    def record(**fields) -> str:
        return json.dumps({"kind": "instruction", "instruction": "q", "input": "", "output": "-", **fields})

    refusal_correct, answer_match, finished = reward_functions("refusal", {"refusal_phrases": ["无法回答"]}, 4, {2})
    completions = ["我无法回答。", "答案是北京。", "无法回答", "上海"]
    records = [record(answers=[]), record(answers=["北京"]), record(answers=["北京"]), record(answers=["北京"])]
    assert refusal_correct(None, completions, records) == [1.0, 1.0, 0.0, 1.0]
    assert answer_match(None, completions, records) == [0.0, 1.0, 0.0, 0.0]
    # finished: something said, and ended by the model (end-of-sequence 2) or short of the 4-token limit
    assert finished(None, ["a", "", "abcd", "abcd"], [[5], [2], [5, 6, 7, 8], [5, 6, 7, 2]]) == [1.0, 0.0, 0.0, 1.0]
    label_match, _ = reward_functions("label_match", {"label_words": {"positive": ["bullish"]}}, 8, {2})
    conversational = [[{"role": "assistant", "content": "Bullish."}], [{"role": "assistant", "content": "negative"}]]
    assert label_match(None, conversational, [record(label="positive"), record(label="positive")]) == [1.0, 0.0]
    rouge_l, _ = reward_functions("rouge_any", {}, 8, {2})
    assert rouge_l(None, ["they meet at noon", "no"], [record(output="they meet at noon")] * 2) == [1.0, 0.0]


def test_grpo_samples_the_task_s_prompts_and_logs_each_reward(tmp_path, monkeypatch):
    from datasets import load_from_disk

    monkeypatch.chdir(tmp_path)
    workspace(tmp_path, "llama", "causal_lm", "lora")
    spec = read_yaml(tmp_path / "experiments/toy.yaml")
    spec.update(objective="grpo", init_from="toy")
    spec.pop("merge", None)
    spec["train"].update(max_steps=2, batch_size=4, grpo={"num_generations": 2, "max_completion_length": 4})
    name = write_experiment(tmp_path, "grpo", spec)
    for experiment in ("toy", name):
        tokenize_stage.main([experiment])
    rows = load_from_disk(f"data/tokenized/{name}/train")
    assert json.loads(rows[0]["prompt_json"])[-1]["role"] == "user"  # the conversation before the answer
    assert json.loads(rows[0]["record_json"])["output"].startswith("They agree")  # what its rewards read
    train_stage.main(["toy"])
    train_stage.main([name])
    live = json.loads(Path(f"reports/train/{name}/live/metrics.json").read_text())
    assert set(live["train"]["rewards"]) == {"rouge_l", "finished"} and "reward" in live["train"]
    summary = json.loads(Path(f"reports/train/{name}/summary.json").read_text())
    assert 0 <= summary["final_eval_reward"] <= 2 and summary["steps"] == 2


def test_init_from_needs_an_experiment_of_the_profile_with_the_same_model_kind_method_and_4_bit_settings(tmp_path):
    from tunepipe.plan import checked_setups

    workspace(tmp_path, "llama", "causal_lm", "lora")
    spec = read_yaml(tmp_path / "experiments/toy.yaml")
    with inside(tmp_path):
        for change, message in ((dict(init_from="nowhere"), "init_from 'nowhere' is not an experiment of this profile"),
                                (dict(init_from="toy", method="qlora", qlora={"quant_type": "nf4"}),
                                 "init_from: 'toy' trains method 'lora', this experiment 'qlora'")):
            write_experiment(tmp_path, "dpo", {**spec, "dataset": "toy", "objective": "dpo", **change})
            with pytest.raises(StageError, match=re.escape(f"experiments/dpo.yaml: {message}")):
                checked_setups("")
