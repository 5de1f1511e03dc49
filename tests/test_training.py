"""The train stage's runtime features on tiny models: validation curves through DVCLive, the memory estimate
and its stop, and training as two processes under accelerate."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from stages import memory
from stages import tokenize as tokenize_stage
from stages import train as train_stage
from stages.common import StageError
from stages.modeling import attach_method, load_base
from tests.conftest import REPO
from tests.test_kinds import workspace


def set_train(root: Path, **values) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["toy"].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def test_curves_go_through_dvclive_with_validation_loss_and_same_bytes_every_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, "llama", "causal_lm", "lora")
    set_train(tmp_path, max_steps=4, batch_size=2, eval_steps=2)
    tokenize_stage.main([name])
    train_stage.main([name])
    live = Path("reports/train/toy/live")
    summary = json.loads((live / "metrics.json").read_text())
    assert set(summary) == {"train", "eval", "step"} and summary["step"] == 4
    train_curve = (live / "plots/metrics/train/loss.tsv").read_text().splitlines()
    eval_curve = (live / "plots/metrics/eval/loss.tsv").read_text().splitlines()
    assert train_curve[0] == "step\tloss" and [row.split("\t")[0] for row in train_curve[1:]] == ["1", "2", "3", "4"]
    assert [row.split("\t")[0] for row in eval_curve[1:]] == ["2", "4"]  # every eval_steps
    assert float(eval_curve[-1].split("\t")[1]) == summary["eval"]["loss"]
    first = {p: p.read_bytes() for p in sorted(live.rglob("*")) if p.is_file()}
    train_stage.main([name])  # again: no timestamps, no run ids, the same bytes
    assert {p: p.read_bytes() for p in sorted(live.rglob("*")) if p.is_file()} == first


def test_memory_estimate_counts_each_part_and_stops_a_run_that_cannot_fit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, "llama", "causal_lm", "lora")
    base = Path("models/base/tiny")
    params = yaml.safe_load(Path("params.yaml").read_text())["train"][name]
    model = attach_method(load_base("causal_lm", base), "causal_lm", "lora", params, base)
    small = memory.estimate(model, batch_size=4, seq_len=64, optimizer="adamw_torch", checkpointing=False)
    large = memory.estimate(model, batch_size=8, seq_len=64, optimizer="adamw_torch", checkpointing=False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert small["gradients"] == trainable * 4 and small["optimizer"] == trainable * 8  # fp32, AdamW's 2 moments
    assert large["activations"] == 2 * small["activations"] and large["weights"] == small["weights"]
    recomputed = memory.estimate(model, batch_size=4, seq_len=64, optimizer="adamw_torch", checkpointing=True)
    assert recomputed["activations"] < small["activations"]
    assert memory.estimate(model, 4, 64, "paged_adamw_8bit", False)["optimizer"] == trainable * 2

    set_train(tmp_path, memory_limit_gb=0.001)  # 1 MiB: the tiny run needs more
    tokenize_stage.main([name])
    with pytest.raises(StageError, match=r"params.yaml train.toy: training needs about 0\.\d+ GiB \(weights .* GiB\) "
                                         r"but only 0\.00 GiB is free here: lower batch_size"):
        train_stage.main([name])
    assert not Path("models/trained/toy").exists()


def test_two_processes_under_accelerate_match_one_process(tmp_path):
    """DDP over 2 CPU processes, each half of every batch, against one process with whole batches, in the
    same order (sequential sampling), without dropout and with SGD: the same updates up to float summation
    order. Stated tolerance: 1e-6 per weight."""
    results = {}
    for processes in (1, 2):
        root = tmp_path / f"p{processes}"
        root.mkdir()
        name = workspace(root, "bert", "sequence_head", "full")
        config_path = root / "models/base/tiny/config.json"  # no dropout: each process draws its own masks
        config = json.loads(config_path.read_text())
        config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
        config_path.write_text(json.dumps(config))
        os.chdir(root)
        try:
            tokenize_stage.main([name])
        finally:
            os.chdir(REPO)
        # plain SGD: Adam divides by the gradient's own size, so a gradient of ~1e-9 whose sign differs with
        # the order of a float sum moves a weight by a full learning rate either way
        set_train(root, max_steps=3, batch_size=4 // processes, processes=processes, threads=1,
                  sampling="sequential", learning_rate=0.05, optim="sgd")
        result = subprocess.run([sys.executable, "-m", "stages.train", name], cwd=root, capture_output=True,
                                text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        results[processes] = load_file(root / "models/trained/toy/model.safetensors")
        assert json.loads((root / "reports/train/toy/summary.json").read_text())["steps"] == 3
    for key, one in results[1].items():
        assert torch.allclose(one, results[2][key], rtol=0, atol=1e-6), key
    from transformers import set_seed

    set_seed(7)  # the experiment's seed: the head both runs started from
    start = load_base("sequence_head", tmp_path / "p1/models/base/tiny", labels=["no", "yes"])
    assert not torch.allclose(start.classifier.weight, results[1]["classifier.weight"], rtol=0, atol=1e-6)  # it trained


def test_keep_best_ends_with_the_weights_that_scored_best_on_validation(tmp_path, monkeypatch):
    from datasets import load_from_disk

    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, "bert", "sequence_head", "full")
    set_train(tmp_path, max_steps=8, batch_size=2, eval_steps=2, keep_best="accuracy", learning_rate=0.02)
    tokenize_stage.main([name])
    model = train_stage.main([name])
    curve = (tmp_path / "reports/train/toy/live/plots/metrics/eval/accuracy.tsv").read_text().splitlines()[1:]
    logged = [float(row.split("\t")[1]) for row in curve]
    assert len(logged) == 4  # steps 2, 4, 6, 8
    rows = load_from_disk("data/tokenized/toy/validation")
    model.eval()
    with torch.no_grad():
        predicted = [int(model(input_ids=torch.tensor([r["input_ids"]]),
                                token_type_ids=torch.tensor([r["token_type_ids"]])).logits.argmax(-1))
                     for r in rows]
    accuracy = sum(p == r["labels"] for p, r in zip(predicted, rows)) / len(rows)
    assert accuracy == max(logged)  # the kept weights score the best logged validation accuracy
    assert not Path("checkpoints/toy").exists()
