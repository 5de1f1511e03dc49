"""Bad experiment params fail at once with one line naming the key, before torch is even imported."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

GOOD = {"dataset": "toy", "model": "tiny", "kind": "causal_lm", "method": "lora", "metric": "rouge_any"}
TRAIN = {"learning_rate": 0.001, "epochs": 1, "batch_size": 2, "threads": 1,
         "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj"]}}


def run_stage(tmp_path: Path, experiment: dict, stage: str = "train", train: dict | None = None,
              env: dict | None = None, predict: dict | None = None) -> tuple[subprocess.CompletedProcess, str]:
    params = {"experiments": {"toy": experiment}, "train": {"toy": train or TRAIN},
              "tokenize": {"toy": {"max_length": 64}},
              "predict": {"toy": predict or {"batch_size": 1, "max_new_tokens": 1}},
              "merge": {"toy": {"tolerance": 0.001}}, "score": {"toy": {}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    # -X importtime lists every module imported, on stderr: the failure must come before torch
    args = ["toy", "before"] if stage == "predict" else ["toy"]
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", f"stages.{stage}", *args], cwd=tmp_path,
                            capture_output=True, text=True, env={"PYTHONPATH": str(REPO), **(env or {})}, timeout=60)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "torch" not in imported and "transformers" not in imported
    return result, lines[0]


@pytest.mark.parametrize("change,message", [
    ({"kind": "encoder_decoder"}, "experiments.toy.kind: unknown model kind 'encoder_decoder' (known: causal_lm, "
                                  "seq2seq, token_head, sequence_head)"),
    ({"method": "adapter"}, "experiments.toy.method: unknown training method 'adapter' (known: lora, qlora, "
                            "prompt_tuning, full)"),
    ({"kind": "token_head", "method": "prompt_tuning"}, "experiments.toy.method: 'prompt_tuning' does not fit "
                                                       "model kind 'token_head' (a token_head takes lora, full)"),
    ({"metric": "bleu"}, "experiments.toy.metric: unknown metric 'bleu'"),
    ({"method": None}, "experiments.toy: missing required key method"),
])
@pytest.mark.parametrize("stage", ["tokenize", "train", "merge", "predict", "score"])
def test_bad_experiment_fails_in_every_stage_with_one_line(tmp_path, change, message, stage):
    _, line = run_stage(tmp_path, {**GOOD, **change}, stage)
    assert line.startswith("error: params.yaml ") and message in line


def test_missing_method_block_names_the_key(tmp_path):
    _, line = run_stage(tmp_path, GOOD, train={k: v for k, v in TRAIN.items() if k != "lora"})
    assert line == "error: params.yaml train.toy.lora: missing required keys r, alpha, dropout, target_modules"


def test_a_typo_in_train_params_names_the_key(tmp_path):
    _, line = run_stage(tmp_path, GOOD, train={**TRAIN, "eval_step": 10})
    assert line.startswith("error: params.yaml train.toy: unknown keys ['eval_step'] (known: ")
    _, line = run_stage(tmp_path, GOOD, train={**TRAIN, "precision": "fp8"})
    assert line == "error: params.yaml train.toy.precision: 'fp8' is not one of auto, fp32, bf16, fp16"
    _, line = run_stage(tmp_path, {**GOOD, "method": "qlora", "qlora": {"compute_dtype": "float8"}})
    assert line == ("error: params.yaml experiments.toy.qlora.compute_dtype: 'float8' is not float32, bfloat16 "
                    "or float16")


def test_4bit_settings_belong_to_qlora_only(tmp_path):
    _, line = run_stage(tmp_path, {**GOOD, "qlora": {"quant_type": "nf4"}})
    assert line == "error: params.yaml experiments.toy.qlora: 4-bit settings need method qlora, not 'lora'"
    _, line = run_stage(tmp_path, {**GOOD, "method": "qlora", "qlora": {"bits": 3}})
    assert line == ("error: params.yaml experiments.toy.qlora: unknown keys ['bits'] (known: quant_type, "
                    "double_quant, compute_dtype)")


def test_merge_entry_for_a_method_with_nothing_to_merge(tmp_path):
    _, line = run_stage(tmp_path, {**GOOD, "method": "full"}, "merge")
    assert line == ("error: params.yaml merge.toy: method 'full' has no low-rank update to merge (merge applies "
                    "to lora, qlora); remove this entry")


def test_qlora_where_bitsandbytes_cannot_load_4bit_weights(tmp_path):
    # a bitsandbytes older than CPU 4-bit support, found first on the path (its metadata is what is read)
    info = tmp_path / "old_site" / "bitsandbytes-0.42.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bitsandbytes\nVersion: 0.42.0\n")
    _, line = run_stage(tmp_path, {**GOOD, "method": "qlora"},
                        env={"PYTHONPATH": f"{tmp_path / 'old_site'}:{REPO}"})
    assert line == ("error: params.yaml experiments.toy.method: qlora needs bitsandbytes >= 0.48 to load 4-bit "
                    "weights on this machine; 0.42.0 is installed")


@pytest.mark.parametrize("decoding,message", [
    ({"beams": 4}, "predict.toy.decoding: unknown beams (known: do_sample, temperature, top_p, top_k, seed, "
                   "repetition_penalty, no_repeat_ngram_size, stop)"),
    ({"temperature": 0.7}, "predict.toy.decoding: temperature/top_p/top_k/seed apply only with do_sample: true"),
    ({"do_sample": True, "seed": 1, "temperature": 0}, "predict.toy.decoding.temperature: 0.0 is out of range"),
    ({"do_sample": True, "seed": 1, "top_p": 1.5}, "predict.toy.decoding.top_p: 1.5 is out of range"),
    ({"do_sample": True, "seed": True}, "predict.toy.decoding.seed: expected a int, got True"),
    ({"stop": ["###", ""]}, "predict.toy.decoding.stop: a list of non-empty strings"),
    ({"do_sample": True, "temperature": 0.7}, "predict.toy.decoding: sampling needs a seed"),
    ({"stop": "###"}, "predict.toy.decoding.stop: expected a list, got '###'"),
])
def test_bad_decoding_settings_name_the_key(tmp_path, decoding, message):
    _, line = run_stage(tmp_path, GOOD, "predict", predict={"batch_size": 1, "max_new_tokens": 1, "decoding": decoding})
    assert line.startswith("error: params.yaml ") and message in line
