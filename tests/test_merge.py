"""Merging LoRA into its base: shard by shard equals peft's whole-model merge, and the merge stage checks
itself (a corrupted adapter or a tolerance the merge cannot meet fails with one line)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from safetensors.torch import load_file, save_file

from tunepipe.errors import StageError
from tunepipe.lora_shards import merge_by_shard, shard_files, unsupported
from tests.tiny_models import write_tiny_model
from tests.workspace import write_experiment, write_yaml

TARGETS = {"llama": ["q_proj", "v_proj", "down_proj"], "gpt2": ["c_attn", "c_fc"], "phi": ["q_proj", "dense", "fc1"],
           "t5": ["q", "v", "wi"]}


def auto_class(arch: str):
    import transformers

    return transformers.AutoModelForSeq2SeqLM if arch == "t5" else transformers.AutoModelForCausalLM


def base_and_adapter(root: Path, arch: str, shard_size: str | None = None, **lora) -> tuple[Path, Path]:
    """A tiny base (in several shards with `shard_size`) and a LoRA adapter with non-zero B matrices."""
    from peft import LoraConfig, get_peft_model

    base = write_tiny_model(arch, root / arch)
    model = auto_class(arch).from_pretrained(base)
    if shard_size:  # re-save the same weights in several files, with an index
        (base / "model.safetensors").unlink()
        model.save_pretrained(base, max_shard_size=shard_size, safe_serialization=True)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS[arch], **lora))
    torch.manual_seed(3)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: a merge of that would change nothing
            parameter.data.normal_(std=0.02)
    peft_model.save_pretrained(root / f"{arch}-adapter")
    return base, root / f"{arch}-adapter"


def all_tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for name in shard_files(folder):
        tensors.update(load_file(folder / name))
    return tensors


@pytest.mark.parametrize("arch", ["llama", "gpt2", "phi", "t5"])
def test_shard_by_shard_equals_the_whole_model_merge(arch, tmp_path):
    from peft import PeftModel

    base, adapter = base_and_adapter(tmp_path, arch, shard_size="100KB")
    assert len(shard_files(base)) > 2  # really several shards
    whole = PeftModel.from_pretrained(auto_class(arch).from_pretrained(base), adapter).merge_and_unload()
    whole.save_pretrained(tmp_path / "whole", safe_serialization=True)
    counts = merge_by_shard(base, adapter, tmp_path / "by-shard")

    expected, merged, original = all_tensors(tmp_path / "whole"), all_tensors(tmp_path / "by-shard"), all_tensors(base)
    assert counts["shards"] == len(shard_files(base)) and counts["modules"] > 0
    assert set(merged) == set(original)  # same names, same files as the base
    changed = {key for key in merged if not torch.equal(merged[key], original[key])}
    assert changed and all(key.rsplit(".", 2)[-2] in TARGETS[arch] for key in changed)
    assert all(torch.equal(merged[key], expected[key]) for key in expected)  # bit for bit peft's result
    reloaded = auto_class(arch).from_pretrained(tmp_path / "by-shard")  # index, config: a plain model
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in whole.parameters())


def test_a_half_precision_merge_matches_peft_in_that_precision(tmp_path):
    from peft import PeftModel

    base, adapter = base_and_adapter(tmp_path, "llama")
    whole = PeftModel.from_pretrained(auto_class("llama").from_pretrained(base, dtype=torch.bfloat16), adapter)
    whole.merge_and_unload().save_pretrained(tmp_path / "whole", safe_serialization=True)
    merge_by_shard(base, adapter, tmp_path / "by-shard", dtype="bfloat16")
    expected, merged = all_tensors(tmp_path / "whole"), all_tensors(tmp_path / "by-shard")
    assert all(t.dtype == torch.bfloat16 for t in merged.values())
    assert all(torch.equal(merged[key], expected[key]) for key in expected)


def test_adapters_that_need_the_whole_model_say_why(tmp_path):
    _, dora = base_and_adapter(tmp_path, "llama", use_dora=True)
    assert "DoRA" in unsupported(dora)
    with pytest.raises(ValueError, match="cannot merge shard by shard: DoRA"):
        merge_by_shard(tmp_path / "llama", dora, tmp_path / "out")


def merge_workspace(root: Path, arch: str, merge: dict) -> str:
    """models/base/tiny + models/trained/toy (a LoRA adapter and its recipe) + the experiment and its settings."""
    base, adapter = base_and_adapter(root / "src", arch)
    (root / "models/base").mkdir(parents=True)
    base.rename(root / "models/base/tiny")
    (root / "models/trained").mkdir(parents=True)
    adapter.rename(root / "models/trained/toy")
    (root / "models/trained/toy/recipe.json").write_text(json.dumps(
        {"kind": "causal_lm", "method": "lora", "labels": None, "qlora": None, "data_sha256": "ab" * 32}))
    write_yaml(root / "params.yaml", {"datasets": {"toy": {"path": "raw", "format": "alpaca"}},
                                      "models": {"tiny": {"path": "tiny"}}})
    return write_experiment(root, "toy", {
        "dataset": "toy", "model": "tiny", "kind": "causal_lm", "method": "lora", "metric": "rouge_any", "seed": 7,
        "train": {"learning_rate": 0.01, "epochs": 1, "batch_size": 4, "threads": 2,
                  "lora": {"r": 4, "alpha": 8, "target_modules": TARGETS[arch]}},
        "merge": merge})


def test_merge_stage_folds_by_shard_checks_itself_and_writes_a_card(tmp_path, monkeypatch):
    from stages import merge as merge_stage

    monkeypatch.chdir(tmp_path)
    merge_stage.main([merge_workspace(tmp_path, "llama", {"tolerance": 1e-4})])
    out = Path("models/merged/toy")
    check = json.loads((out / "merge_check.json").read_text())
    assert check["passed"] and check["by_shard"] and check["dtype"] == "float32"
    assert 0 <= check["max_abs_logit_difference"] <= 1e-4
    assert {"config.json", "generation_config.json", "tokenizer.json", "model.safetensors"} <= {
        p.name for p in out.iterdir()}
    card = (out / "README.md").read_text()
    adapter_sha = __import__("hashlib").sha256(Path("models/trained/toy/adapter_model.safetensors").read_bytes())
    assert adapter_sha.hexdigest() in card and "ab" * 32 in card and "`tiny`" in card and "learning_rate" in card
    assert str(tmp_path) not in card and "/" + "root" not in card  # names and hashes, never paths


def test_a_corrupted_adapter_fails_the_merge_with_one_line(tmp_path, monkeypatch):
    from stages import merge as merge_stage

    monkeypatch.chdir(tmp_path)
    name = merge_workspace(tmp_path, "gpt2", {"tolerance": 1e-4})
    weights = Path("models/trained/toy/adapter_model.safetensors")
    tensors = load_file(weights)
    first_b = next(key for key in sorted(tensors) if "lora_B" in key)
    tensors[first_b][0, 0] = float("nan")  # one bad value, as a truncated or bit-flipped download leaves
    save_file(tensors, weights)
    with pytest.raises(StageError, match=r"adapter_model.safetensors: the adapter model.s logits are not finite"):
        merge_stage.main([name])
    assert not Path("models/merged/toy").exists()  # nothing that looks done


def test_a_merge_outside_its_tolerance_fails_saying_by_how_much(tmp_path, monkeypatch):
    from stages import merge as merge_stage

    monkeypatch.chdir(tmp_path)
    # bfloat16 weights round the merged update: its logits drift from the adapter model's by more than 1e-6
    name = merge_workspace(tmp_path, "llama", {"tolerance": 1e-6, "dtype": "bfloat16"})
    with pytest.raises(StageError, match=r"logits differ by up to [0-9.e-]+ from the adapter's \(tolerance 1e-06 in bfloat16\)"):
        merge_stage.main([name])
    assert not Path("models/merged/toy").exists()


def test_by_shard_true_on_an_adapter_that_cannot_names_the_reason(tmp_path, monkeypatch):
    from stages import merge as merge_stage

    monkeypatch.chdir(tmp_path)
    name = merge_workspace(tmp_path, "llama", {"tolerance": 1e-4, "by_shard": True})
    config_path = Path("models/trained/toy/adapter_config.json")
    config = json.loads(config_path.read_text())
    config["bias"] = "lora_only"
    config_path.write_text(json.dumps(config))
    with pytest.raises(StageError, match=r"experiments/toy.yaml merge.by_shard: cannot merge .* trained biases"):
        merge_stage.main([name])


def test_a_tied_lm_head_or_embedding_lora_goes_to_the_whole_model_merge(tmp_path, monkeypatch):
    from stages import merge as merge_stage

    # the tiny Llama ties its lm_head to the embedding (as SmolLM2 does): the checkpoint has no lm_head weight
    base, adapter = base_and_adapter(tmp_path, "llama")
    from peft import LoraConfig, get_peft_model

    model = auto_class("llama").from_pretrained(base)
    assert model.config.tie_word_embeddings
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"])).save_pretrained(
        tmp_path / "lm-head-adapter")
    # peft saves the tied weight beside such an adapter; either way it is not a plain shard-by-shard case
    assert "lm_head" in unsupported(tmp_path / "lm-head-adapter", base)
    model = auto_class("llama").from_pretrained(base)
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["embed_tokens"])).save_pretrained(
        tmp_path / "embedding-adapter")
    assert "not only lora_A/lora_B weights" in unsupported(tmp_path / "embedding-adapter", base)

    monkeypatch.chdir(tmp_path)
    name = merge_workspace(tmp_path / "ws", "llama", {"tolerance": 1e-4})
    monkeypatch.chdir(tmp_path / "ws")
    shutil.rmtree("models/trained/toy/")
    shutil.copytree(tmp_path / "lm-head-adapter", "models/trained/toy")
    Path("models/trained/toy/recipe.json").write_text(json.dumps(
        {"kind": "causal_lm", "method": "lora", "labels": None, "qlora": None, "data_sha256": None}))
    merge_stage.main([name])  # auto: the whole-model merge, checked like any other
    check = json.loads(Path("models/merged/toy/merge_check.json").read_text())
    assert check["passed"] and not check["by_shard"]


def test_the_default_tolerance_follows_the_merged_dtype():
    """`auto` (the default) is what each dtype's rounding alone allows; a stated tolerance is kept as it is."""
    from tunepipe.merging import tolerance_for

    assert tolerance_for("auto", "float32") == 1e-3
    assert tolerance_for("auto", "bfloat16") == tolerance_for("auto", "float16") == 5e-2
    assert tolerance_for(1e-4, "bfloat16") == 1e-4
