"""The tiny model folders load like the real ones: Auto classes, tokenizers, chat template, generate, train."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from tests.tiny_models import ARCHITECTURES, write_tiny_model

AUTO_CLASS = {"llama": AutoModelForCausalLM, "gpt_neo": AutoModelForCausalLM, "gpt2": AutoModelForCausalLM,
              "phi": AutoModelForCausalLM, "t5": AutoModelForSeq2SeqLM, "bert": AutoModel}
GENERATIVE = ["llama", "gpt_neo", "gpt2", "phi", "t5"]
TEXTS = ["The company's operating profit rose to EUR 13.1 million.", "北京是中国的首都，今天天气很好。",
         "Mixed 中英文 text: 模型 model, zebra 斑马 & emoji-free punctuation?!"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: write_tiny_model(arch, root / arch) for arch in ARCHITECTURES}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_folder_loads_with_its_auto_class(folders, arch):
    folder = folders[arch]
    model = AUTO_CLASS[arch].from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(model) is ARCHITECTURES[arch].model_class
    assert model.config.vocab_size == len(tokenizer)
    # the config's special ids are the tokenizer's (generation and padding read them from the config);
    # transformers 5 configs lack the attribute altogether where the class has no such id (T5 has no bos)
    for name in ("pad", "bos", "eos"):
        assert getattr(model.config, f"{name}_token_id", None) == getattr(tokenizer, f"{name}_token_id"), name
    # safetensors only, never pickled weights; generation_config.json exactly where the class generates
    names = {p.name for p in folder.iterdir()}
    assert "model.safetensors" in names and not {n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt"))}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert ("generation_config.json" in names) == model.can_generate()


def test_each_architecture_keeps_its_real_shape(folders):
    llama = AutoModelForCausalLM.from_pretrained(folders["llama"])
    assert llama.config.num_key_value_heads < llama.config.num_attention_heads  # GQA
    assert llama.lm_head.weight is llama.model.embed_tokens.weight                # tied, as SmolLM2
    t5 = AutoModelForSeq2SeqLM.from_pretrained(folders["t5"])
    assert t5.config.is_gated_act and t5.config.decoder_start_token_id == 0
    assert t5.lm_head.weight is not t5.shared.weight and not t5.config.scale_decoder_outputs  # as flan-t5
    neo = AutoModelForCausalLM.from_pretrained(folders["gpt_neo"])
    assert neo.config.attention_layers == ["global", "local"]
    phi = AutoModelForCausalLM.from_pretrained(folders["phi"])
    assert phi.config.rope_parameters["partial_rotary_factor"] == 0.4
    assert phi.lm_head.weight is not phi.model.embed_tokens.weight
    # GPT-2-style base models have no pad token, as the real ones: the pipeline must choose one
    for arch in ("gpt2", "gpt_neo", "phi"):
        tokenizer = AutoTokenizer.from_pretrained(folders[arch])
        assert tokenizer.pad_token is None and tokenizer.eos_token_id == len(tokenizer) - 1


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_tokenizer_round_trips_english_and_chinese(folders, arch):
    tokenizer = AutoTokenizer.from_pretrained(folders[arch])
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert ("token_type_ids" in tokenizer("x")) == (arch == "bert")  # generate() rejects token_type_ids


def test_special_tokens_are_added_like_the_real_tokenizers(folders):
    t5 = AutoTokenizer.from_pretrained(folders["t5"])
    assert t5("hello")["input_ids"][-1] == t5.eos_token_id == 1 and t5.pad_token_id == 0
    bert = AutoTokenizer.from_pretrained(folders["bert"])
    pair = bert("The cat sat.", "A cat was sitting.")
    ids, types = pair["input_ids"], pair["token_type_ids"]
    assert ids[0] == bert.cls_token_id and ids[-1] == bert.sep_token_id and ids.count(bert.sep_token_id) == 2
    first_sep = ids.index(bert.sep_token_id)
    assert set(types[:first_sep + 1]) == {0} and set(types[first_sep + 1:]) == {1}
    # the NER path tokenizes pre-split words and maps sub-words back with word_ids
    words = bert(["IL-2", "gene", "expression"], is_split_into_words=True)
    assert words.word_ids()[0] is None and words.word_ids()[-1] is None
    assert sorted({w for w in words.word_ids() if w is not None}) == [0, 1, 2]
    for arch in ("llama", "gpt2", "gpt_neo", "phi"):  # byte-level GPT-2 style: nothing added
        tokenizer = AutoTokenizer.from_pretrained(folders[arch])
        assert tokenizer("hello")["input_ids"] == tokenizer("hello", add_special_tokens=False)["input_ids"]


def test_only_llama_has_a_chat_template(folders):
    tokenizer = AutoTokenizer.from_pretrained(folders["llama"])
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Hi there"}],
                                             add_generation_prompt=True, tokenize=False)
    assert rendered == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
                        "Face<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    with_system = tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "Hi"}], tokenize=False)
    assert with_system == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    for arch in ("gpt2", "gpt_neo", "phi", "t5", "bert"):
        assert AutoTokenizer.from_pretrained(folders[arch]).chat_template is None, arch


@pytest.mark.parametrize("arch", GENERATIVE)
def test_generate_three_greedy_tokens(folders, arch):
    tokenizer = AutoTokenizer.from_pretrained(folders[arch], padding_side="left")
    model = AUTO_CLASS[arch].from_pretrained(folders[arch]).eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # what a pipeline does for GPT-2-style base models
    batch = tokenizer(["Summarize: the meeting is at noon.", "北京"], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=pad_id)
    new = out.shape[1] - (1 if model.config.is_encoder_decoder else batch["input_ids"].shape[1])
    assert new == 3  # T5's output starts with decoder_start_token_id
    # the short row, padded on the left in the batch, continues exactly as it does alone: what batched
    # generation in the predict stage relies on
    alone = tokenizer(["北京"], return_tensors="pt")
    single = model.generate(**alone, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=pad_id)
    assert out[1, -3:].tolist() == single[0, -3:].tolist()


def _file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_bytes_are_deterministic_per_seed(tmp_path, arch):
    first = _file_bytes(write_tiny_model(arch, tmp_path / "a", seed=0))
    assert first == _file_bytes(write_tiny_model(arch, tmp_path / "b", seed=0))
    other = _file_bytes(write_tiny_model(arch, tmp_path / "c", seed=1))
    assert other["model.safetensors"] != first["model.safetensors"]
    assert {k: v for k, v in other.items() if k != "model.safetensors"} == \
        {k: v for k, v in first.items() if k != "model.safetensors"}  # only the weights depend on the seed


def _train_step(model, batch) -> None:
    model.train()
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("arch", GENERATIVE)
def test_forward_backward_generative(folders, arch):
    torch.manual_seed(0)
    model = AUTO_CLASS[arch].from_pretrained(folders[arch])
    ids = torch.randint(0, model.config.vocab_size, (4, 64))
    _train_step(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_classification_heads_build_and_train(folders, arch):
    tokenizer = AutoTokenizer.from_pretrained(folders[arch])
    sequence = AutoModelForSequenceClassification.from_pretrained(folders[arch], num_labels=3)
    tokens = AutoModelForTokenClassification.from_pretrained(folders[arch], num_labels=3)
    if tokenizer.pad_token is None:  # GPT-2 sequence heads pick the last non-pad token: they need a pad id
        tokenizer.pad_token = tokenizer.eos_token
        sequence.config.pad_token_id = tokenizer.pad_token_id
    batch = tokenizer(["The cat sat on the mat.", "股价今天上涨。", "Net sales fell.", "OK"],
                      ["A cat was sitting.", "股票涨了。", "Sales decreased.", "Fine"],
                      return_tensors="pt", padding=True)
    _train_step(sequence, {**batch, "labels": torch.tensor([0, 1, 2, 1])})
    labels = torch.randint(0, 3, batch["input_ids"].shape)
    _train_step(tokens, {**batch, "labels": labels.masked_fill(batch["attention_mask"] == 0, -100)})
