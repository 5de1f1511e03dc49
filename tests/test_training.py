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
from safetensors.torch import load_file

from stages import tokenize as tokenize_stage
from stages import train as train_stage
from tunepipe.errors import StageError
from tunepipe.loading import load_base
from tests.conftest import REPO
from tests.test_kinds import workspace
from tests.workspace import edit, inside


def set_train(root: Path, **values) -> None:
    """Change the experiment file's train settings and re-run its config stage, as DVC would."""
    from stages import config

    for key, value in values.items():
        edit(root / "experiments/toy.yaml", f"train.{key}", value)
    with inside(root):
        config.main(["toy"])


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


PEAK_PROBE = """
import json, sys
from pathlib import Path
import torch
from tunepipe import memory
from tunepipe.activations import kept_activations
from tunepipe.loading import attach_method, load_base

def status(key: str) -> int:  # a /proc/self/status figure, in bytes
    return int(next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key)).split()[1]) * 1024

folder, batch, attention = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)
base = load_base("causal_lm", folder)
base.set_attn_implementation(attention)
# the setting where a formula undercounts: dropout copies of every adapted layer's input, a wide gated MLP
lora = {"lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": "all-linear"}}
model = attach_method(base, "causal_lm", "lora", lora, folder).train()
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
ids = torch.randint(0, model.config.vocab_size, (batch, 256))
# the kernel's own high-water mark of resident memory, reset here ("5": Linux's peak-RSS reset), so the
# step's peak is read exactly: a sampling thread could miss a short one (eager attention's scores) under load
Path("/proc/self/clear_refs").write_text("5")
start = status("VmRSS:")
model(input_ids=ids, labels=ids).loss.backward()
optimizer.step()
peak = [status("VmHWM:")]
print(json.dumps({"measured": peak[0] - start,
                  "estimated": memory.estimate(model, batch, 256, "adamw_torch", kept_activations(
                      model, "causal_lm", "lora", lora, folder, batch, 256, False),
                      slack=memory.ALLOCATOR_SLACK["cpu"])["activations"]}))
"""


def test_the_activation_estimate_follows_a_measured_peak(tmp_path):
    """One training step's measured peak of allocated memory, at batch 4 and 16 (each in a fresh process, so
    no allocator keeps the first one's pages): the growth between them is activations only, and the estimate
    must follow it, for fused (SDPA, transformers' default) and for eager attention, which keeps the
    attention scores and so needs more."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.tiny_models import write_tiny_model

    folder = write_tiny_model("llama", tmp_path / "tiny")
    config = AutoConfig.from_pretrained(folder)
    config.intermediate_size = 8 * config.hidden_size  # SwiGLU keeps gate, up, activation and product at this width
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder, safe_serialization=True)

    def step(batch: int, attention: str) -> dict:
        done = subprocess.run([sys.executable, "-c", PEAK_PROBE, str(folder), str(batch), attention], capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    growth = {}
    for attention in ("sdpa", "eager"):
        small, large = step(4, attention), step(16, attention)
        measured, estimated = large["measured"] - small["measured"], large["estimated"] - small["estimated"]
        assert 0.8 <= measured / estimated <= 1.2, (attention, measured, estimated)  # the sampled peak varies a few %
        growth[attention] = (measured, estimated)
    assert growth["eager"][0] > 1.3 * growth["sdpa"][0] and growth["eager"][1] > 1.3 * growth["sdpa"][1]


def test_a_run_that_cannot_fit_stops_before_it_starts_with_the_estimate_per_part(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, "llama", "causal_lm", "lora")
    set_train(tmp_path, memory_limit_gb=0.001)  # 1 MiB: the tiny run needs more
    tokenize_stage.main([name])
    with pytest.raises(StageError, match=r"experiments/toy.yaml train: training needs about 0\.\d+ GiB \(weights "
                                         r".* GiB\) but only 0\.00 GiB is free here: lower batch_size"):
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
    """A learning rate that overshoots (validation loss 5.2, 1.7, 5.4, 6.1 at steps 2 to 8): the saved model is
    the step-4 one, read back from disk and scored again, not the last."""
    from datasets import load_from_disk

    from tunepipe.loading import load_trained

    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, "bert", "sequence_head", "full")
    set_train(tmp_path, max_steps=8, batch_size=2, eval_steps=2, keep_best="loss", learning_rate=0.3)
    tokenize_stage.main([name])
    train_stage.main([name])
    curve = (tmp_path / "reports/train/toy/live/plots/metrics/eval/loss.tsv").read_text().splitlines()[1:]
    logged = [float(row.split("\t")[1]) for row in curve]
    assert len(logged) == 4 and min(logged) < logged[-1] - 1  # the last evaluation is not the best
    saved = load_trained(Path("models/base/tiny"), Path("models/trained/toy"))
    rows = load_from_disk("data/tokenized/toy/validation").to_list()  # 2 rows: one evaluation batch of 2
    with torch.no_grad():
        logits = torch.cat([saved(input_ids=torch.tensor([r["input_ids"]]),
                                  token_type_ids=torch.tensor([r["token_type_ids"]])).logits for r in rows])
    loss = float(torch.nn.functional.cross_entropy(logits, torch.tensor([r["labels"] for r in rows])))
    assert loss == pytest.approx(min(logged), abs=1e-4)  # the kept weights are the best evaluation's
    assert not Path("checkpoints/toy").exists()


def test_gradient_checkpointing_is_a_setting_switched_on_once(tmp_path, monkeypatch):
    """Unset, QLoRA recomputes activations and a CPU adapter run keeps them; the setting decides otherwise. The
    Trainer alone switches it on: QLoRA's preparation no longer does it too."""
    from tests.tiny_models import write_tiny_model
    from tunepipe.loading import attach_method, load_base
    from tunepipe.training import training_arguments

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU defaults, whatever machine runs this
    params = {"learning_rate": 0.001, "epochs": 1.0, "batch_size": 2, "threads": 1}
    setup = {"seed": 0, "generates": True}
    checkpointing = lambda method, **extra: training_arguments(  # noqa: E731
        {**params, **extra}, {**setup, "method": method}, tmp_path, False, "fp32").activation_checkpointing
    assert (checkpointing("lora"), checkpointing("qlora"), checkpointing("full")) == (False, True, False)
    assert checkpointing("lora", gradient_checkpointing=True) and not checkpointing("qlora", gradient_checkpointing=False)

    folder = write_tiny_model("llama", tmp_path / "tiny")
    qlora = {"quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}
    lora = {"lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}}
    model = attach_method(load_base("causal_lm", folder, qlora=qlora), "causal_lm", "qlora", lora, folder)
    assert not model.base_model.model.is_gradient_checkpointing
