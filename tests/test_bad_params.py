"""A bad experiment file fails at once with one line naming the file, the line and the key, before torch is
even imported: in the config stage (the first stage of every experiment) and in the plan."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.workspace import write_yaml

GOOD = {"dataset": "toy", "model": "tiny", "kind": "causal_lm", "method": "lora", "metric": "rouge_any"}
REGISTRY = {"datasets": {"toy": {"path": "raw", "format": "alpaca"}}, "models": {"tiny": {"path": "tiny"}}}


def run(tmp_path: Path, experiment: dict, module: str = "config", env: dict | None = None,
        params: dict | None = None) -> str:
    """The one line a stage prints when experiments/toy.yaml is bad (it must exit 2 before torch loads)."""
    write_yaml(tmp_path / "params.yaml", params or REGISTRY)
    write_yaml(tmp_path / "experiments/toy.yaml", experiment)
    args = ["--check"] if module == "plan" else ["toy"]
    # -X importtime lists every module imported, on stderr: the failure must come before torch
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", f"stages.{module}", *args], cwd=tmp_path,
                            capture_output=True, text=True, env={"PYTHONPATH": str(REPO), **(env or {})}, timeout=60)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "torch" not in imported and "transformers" not in imported
    return lines[0]


@pytest.mark.parametrize("change,message", [
    ({"kind": "encoder_decoder"}, ":3: kind: Input should be 'causal_lm', 'seq2seq', 'token_head' or "
                                  "'sequence_head', got 'encoder_decoder'"),
    ({"method": "adapter"}, ":4: method: Input should be 'lora', 'qlora', 'prompt_tuning' or 'full', got 'adapter'"),
    ({"kind": "token_head", "method": "prompt_tuning"}, ": method: 'prompt_tuning' does not fit kind 'token_head' "
                                                       "(a token_head takes lora, full)"),
    ({"metric": "bleu"}, ":5: metric: Input should be 'rouge_any', 'ner_seqeval', 'label_match', 'refusal' or "
                         "'perplexity', got 'bleu'"),
    ({"method": None}, ": missing required key 'method'"),
    ({"dataset": "nope"}, "params.yaml: no datasets.nope (known: toy)"),
    ({"train": {"eval_step": 10}}, ":7: train.eval_step: unknown key (known: lora, prompt_tuning, learning_rate, "),
    ({"train": {"precision": "fp8"}}, ":7: train.precision: Input should be 'auto', 'fp32', 'bf16' or 'fp16', "
                                      "got 'fp8'"),
    ({"train": {"epochs": "two"}}, ":7: train.epochs: Input should be a valid number, unable to parse string as a "
                                   "number, got 'two'"),
    ({"train": {"lora": {"r": None}}}, ": train.lora: missing required keys r"),
    ({"method": "qlora", "qlora": {"compute_dtype": "float8"}}, ":7: qlora.compute_dtype: Input should be "
                                                                "'auto', 'float32', 'bfloat16' or 'float16', got 'float8'"),
    ({"qlora": {"quant_type": "nf4"}}, ": qlora: 4-bit settings need method qlora, not 'lora'"),
    ({"method": "qlora", "qlora": {"bits": 3}}, ":7: qlora.bits: unknown key (known: quant_type, double_quant, "
                                                "compute_dtype)"),
    ({"method": "full", "merge": True}, ": merge: method 'full' has no low-rank update to merge (merge applies "
                                        "to lora, qlora)"),
    ({"targets": {"rougeL": "at least 30"}}, ":6: targets: rougeL: 'at least 30' is not"),
    ({"dataset": {"path": "x.json", "format": "alpaca", "options": {"colums": {}}}},
     ": dataset options: unknown ['colums'] for format alpaca (known: columns)"),
    ({"dataset": {"path": "x.json", "format": "jsonl"}}, ":3: dataset.format: unknown format 'jsonl'"),
    ({"predict": {"answer_anyway": [" "]}}, ":7: predict.answer_anyway: a list of non-empty strings (the openings "
                                             "of the refusals to answer past), got [' ']"),
    ({"kind": "sequence_head", "method": "full", "metric": "label_match", "predict": {"answer_anyway": ["no"]}},
     ": predict: answer_anyway applies to a model that generates, not a sequence_head"),
])
def test_a_bad_experiment_fails_in_the_config_stage_with_one_line(tmp_path, change, message):
    experiment = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    line = run(tmp_path, experiment)
    where = "params.yaml" if message.startswith("params.yaml") else "experiments/toy.yaml"
    assert line.startswith(f"error: {where}{message.removeprefix(where)}"), line


def test_the_plan_refuses_the_same_file_with_the_same_line(tmp_path):
    bad = {**GOOD, "train": {"eval_step": 10}}
    assert run(tmp_path, bad, "plan") == run(tmp_path, bad, "config")


def test_qlora_where_bitsandbytes_cannot_load_4bit_weights(tmp_path):
    # a bitsandbytes older than CPU 4-bit support, found first on the path (its metadata is what is read)
    info = tmp_path / "old_site" / "bitsandbytes-0.42.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bitsandbytes\nVersion: 0.42.0\n")
    line = run(tmp_path, {**GOOD, "method": "qlora"}, env={"PYTHONPATH": f"{tmp_path / 'old_site'}:{REPO}"})
    assert line == ("error: experiments/toy.yaml: method: qlora needs bitsandbytes >= 0.48 to load 4-bit "
                    "weights on this machine; 0.42.0 is installed")


@pytest.mark.parametrize("decoding,message", [
    ({"beams": 4}, "predict.decoding.beams: unknown key (known: do_sample, temperature, top_p, top_k, seed, "
                   "repetition_penalty, no_repeat_ngram_size, stop)"),
    ({"temperature": 0.7}, "predict.decoding: temperature applies only with do_sample: true"),
    ({"do_sample": True, "seed": 1, "temperature": 0}, "predict.decoding.temperature: Input should be greater than 0"),
    ({"do_sample": True, "seed": 1, "top_p": 1.5}, "predict.decoding.top_p: Input should be less than or equal to 1"),
    ({"do_sample": True, "seed": True}, "predict.decoding.seed: Input should be a valid integer, got True"),
    ({"stop": ["###", ""]}, "predict.decoding.stop: a list of non-empty strings"),
    ({"do_sample": True, "temperature": 0.7}, "predict.decoding: sampling needs a seed"),
    ({"stop": "###"}, "predict.decoding.stop: Input should be a valid list, got '###'"),
])
def test_bad_decoding_settings_name_the_key(tmp_path, decoding, message):
    line = run(tmp_path, {**GOOD, "predict": {"decoding": decoding}})
    assert line.startswith("error: experiments/toy.yaml:") and message in line, line


def test_a_stage_without_its_settings_says_which_stage_writes_them(tmp_path):
    result = subprocess.run([sys.executable, "-m", "stages.train", "toy"], cwd=tmp_path, capture_output=True,
                            text=True, env={"PYTHONPATH": str(REPO)}, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: data/config/toy/train.json: not found (run dvc repro config@toy)"
