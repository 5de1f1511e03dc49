"""Every model kind x training method the experiments or the seeds use, on a tiny model of the right
architecture built from a config: the real stages tokenize, train two steps, save, reload (the reloaded
model gives the same outputs as the one in memory), predict before and after, merge where it applies.

Stages run in-process in a scratch workspace (an experiment file, its settings, converted rows and a base
model), so each case takes a second or two.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stages import config as config_stage
from stages import merge as merge_stage
from stages import predict as predict_stage
from stages import tokenize as tokenize_stage
from stages import train as train_stage
from tunepipe.errors import StageError
from tunepipe.files import write_json, write_jsonl
from tunepipe import tokenization
from tunepipe.loading import attach_method, load_base, load_trained
from tests.tiny_models import write_tiny_model
from tests.workspace import edit, write_experiment, write_yaml

# (architecture, kind, method): the default experiments' pairs and the seeds' own
CASES = [
    ("llama", "causal_lm", "lora"), ("llama", "causal_lm", "qlora"), ("llama", "causal_lm", "prompt_tuning"),
    ("llama", "causal_lm", "full"),
    ("t5", "seq2seq", "lora"), ("t5", "seq2seq", "full"),               # flan-t5 word senses
    ("gpt_neo", "token_head", "lora"), ("gpt_neo", "causal_lm", "prompt_tuning"),  # GPT-Neo NER, PhraseBank/MRPC
    ("gpt2", "sequence_head", "full"), ("gpt2", "causal_lm", "lora"),   # gpt2 head vs instruction tuning
    ("phi", "causal_lm", "qlora"),                                      # phi-2 DialogSum QLoRA
    ("bert", "token_head", "lora"), ("bert", "token_head", "full"),     # MiniLM NER
    ("bert", "sequence_head", "full"), ("bert", "sequence_head", "lora"), ("bert", "sequence_head", "prompt_tuning"),
]
TARGETS = {"llama": ["q_proj", "v_proj"], "t5": ["q", "v"], "gpt_neo": ["q_proj", "v_proj"], "gpt2": ["c_attn"],
           "phi": ["q_proj", "v_proj", "dense", "fc1", "fc2"], "bert": ["query", "value"]}
METRIC = {"causal_lm": "rouge_any", "seq2seq": "rouge_any", "token_head": "ner_seqeval", "sequence_head": "label_match"}
TAGS = ["O", "B-protein", "I-protein", "B-DNA", "I-DNA"]


def rows_for(kind: str, split: str, count: int) -> list[dict]:
    rows = []
    for n in range(count):
        key = f"{split}-{n}"
        if kind in ("causal_lm", "seq2seq"):
            rows.append({"id": key, "kind": "instruction", "instruction": "Summarize the dialogue.",
                         "input": f"#Person1#: Shall we meet at {n} o'clock? #Person2#: Yes, see you then.",
                         "output": f"They agree to meet at {n} o'clock.", "split": split})
        elif kind == "token_head":
            rows.append({"id": key, "kind": "tokens", "split": split,
                         "tokens": ["IL-2", "gene", "expression", "needs", "NF-kappa", "B", "binding", "."],
                         "tags": ["B-DNA", "I-DNA", "O", "O", "B-protein", "I-protein", "O", "O"]})
        else:
            rows.append({"id": key, "kind": "labelled", "split": split, "text": f"Sales rose {n} % in May .",
                         "text_pair": "Revenue grew in May .", "label": ["yes", "no"][n % 2]})
    return rows


def workspace(root: Path, arch: str, kind: str, method: str) -> str:
    """A scratch repository layout: an experiment file and its settings, one converted dataset, one tiny base
    model."""
    write_tiny_model(arch, root / "models/base/tiny")
    converted = root / "data/converted/toy"
    for split, count in (("train", 8), ("validation", 2), ("test", 3)):
        write_jsonl(converted / f"{split}.jsonl", rows_for(kind, split, count))
    write_json(converted / "labels.json", {"token_head": TAGS, "sequence_head": ["no", "yes"]}.get(kind, []))
    # fp32 whatever the CPU: these cases compare outputs exactly (bf16 storage: tests/test_devices.py)
    train = {"learning_rate": 0.01, "epochs": 1, "max_steps": 2, "batch_size": 4, "threads": 2, "precision": "fp32"}
    if method in ("lora", "qlora"):
        train["lora"] = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": TARGETS[arch]}
    if method == "prompt_tuning":
        train["prompt_tuning"] = {"virtual_tokens": 4, "init_text": "Summarize this"}
    experiment = {"dataset": "toy", "model": "tiny", "kind": kind, "method": method, "metric": METRIC[kind],
                  "seed": 7, "tokenize": {"max_length": 512}, "train": train,
                  "predict": {"batch_size": 2, "max_new_tokens": 4}}
    if method == "qlora":
        experiment["qlora"] = {"quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}
    if method in ("lora", "qlora"):
        experiment["merge"] = {"tolerance": 1e-3}
    write_yaml(root / "params.yaml", {"datasets": {"toy": {"path": "raw", "format": "table"}},
                                      "models": {"tiny": {"path": "tiny"}}})
    return write_experiment(root, "toy", experiment)


def outputs(model, rows: list[dict]) -> torch.Tensor:
    """Logits of each test row (for a seq2seq model, of the first decoder step given the answer's start)."""
    model.eval()
    results = []
    with torch.no_grad():
        for row in rows:
            inputs = {"input_ids": torch.tensor([row["input_ids"]])}
            if "token_type_ids" in row:
                inputs["token_type_ids"] = torch.tensor([row["token_type_ids"]])
            if getattr(model.config, "is_encoder_decoder", False):
                inputs["decoder_input_ids"] = torch.tensor([[model.config.decoder_start_token_id] + row["labels"][:2]])
            results.append(model(**inputs).logits.float().flatten())
    return torch.cat(results)


@pytest.mark.parametrize("arch,kind,method", CASES, ids=["-".join(case) for case in CASES])
def test_trains_two_steps_saves_and_reloads_to_the_same_outputs(arch, kind, method, tmp_path, monkeypatch):
    from datasets import load_from_disk
    from transformers import set_seed

    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, arch, kind, method)
    tokenize_stage.main([name])
    trained_in_memory = train_stage.main([name])

    summary = json.loads(Path(f"reports/train/{name}/summary.json").read_text())
    assert summary["steps"] == 2 and summary["trainable_params"] > 0
    folder = Path("models/trained") / name
    saved = sorted(p.name for p in folder.iterdir())
    assert not [n for n in saved if n.endswith((".bin", ".pt", ".pth"))]  # safetensors only
    expected = {"full": "model.safetensors"}.get(method, "adapter_model.safetensors")
    assert expected in saved and "recipe.json" in saved

    test_rows = load_from_disk(f"data/tokenized/{name}/test").to_list()
    reloaded = load_trained(Path("models/base/tiny"), folder)
    after = outputs(trained_in_memory, test_rows)
    trained = {k for k, p in trained_in_memory.named_parameters() if p.requires_grad}
    state = trained_in_memory.state_dict()
    saved = {k: v for k, v in state.items() if k in trained or any(k.startswith(t.rsplit(".", 1)[0]) for t in trained)}
    assert saved and all(torch.equal(v, reloaded.state_dict()[k]) for k, v in saved.items())  # trained weights exact
    # the same model at step 0 (same seed: same new head, adapter or prompt) gives other outputs
    set_seed(7)
    labels = json.loads(Path("data/converted/toy/labels.json").read_text()) or None
    settings = json.loads(Path(f"data/config/{name}/train.json").read_text())
    base = Path("models/base/tiny")
    start = attach_method(load_base(kind, base, labels=labels, qlora=settings["qlora"]),
                          kind, method, settings["train"], base)
    moved = float((after - outputs(start, test_rows)).abs().max())
    assert moved > 1e-4  # it trained
    if method == "qlora":
        # the Trainer's evaluation pass nudges bitsandbytes' double-quantization state of the 4-bit weights in
        # memory (nested absmax, ~1e-5; exact when no validation split is evaluated); the reloaded model is
        # the one every later stage uses, and it is far closer to the trained model than to the start
        assert float((after - outputs(reloaded, test_rows)).abs().max()) < moved / 10
    else:
        assert torch.equal(after, outputs(reloaded, test_rows))

    for which in ("before", "after"):
        predict_stage.main([name, which])
        predictions = [json.loads(line) for line in Path(f"data/predictions/{name}/{which}.jsonl").read_text().splitlines()]
        assert [p["id"] for p in predictions] == ["test-0", "test-1", "test-2"]
        if kind == "token_head":  # one tag per word, mapped back from the first sub-tokens
            assert all(len(p["prediction"]) == len(p["reference"]) == 8 and set(p["prediction"]) <= set(TAGS)
                       for p in predictions)
        elif kind == "sequence_head":
            assert all(p["prediction"] in ("no", "yes") for p in predictions)
        else:  # a random tiny model may well answer nothing at once (end of sequence): a string is what can be asked
            assert all(isinstance(p["prediction"], str) for p in predictions)
        settings = json.loads(Path(f"data/predictions/{name}/{which}.settings.json").read_text())
        generates = kind in ("causal_lm", "seq2seq")
        assert all(isinstance(p["prompt"], str) == generates for p in predictions)  # the text the model saw
        assert settings["rows"] == 3 and settings["decoding"] == (
            {"max_new_tokens": 4, "do_sample": False} if generates else None)

    if method in ("lora", "qlora"):
        merge_stage.main([name])
        check = json.loads(Path(f"models/merged/{name}/merge_check.json").read_text())
        assert check["passed"] and check["max_abs_logit_difference"] <= 1e-3
        merged = Path(f"models/merged/{name}")
        assert (merged / "model.safetensors").exists() and (merged / "tokenizer.json").exists()
        # a plain LoRA folds shard by shard; QLoRA (de-quantized whole) and a head saved beside its adapter
        # merge as a whole model
        assert check["by_shard"] == (method == "lora" and kind in ("causal_lm", "seq2seq"))
        card = (merged / "README.md").read_text()
        assert "`tiny`" in card and "adapter_model.safetensors sha256" in card
        assert str(tmp_path) not in card


def test_tokens_label_only_the_first_sub_token_of_each_word(tmp_path, monkeypatch):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, "bert", "token_head", "full")
    tokenize_stage.main([name])
    row = load_from_disk(f"data/tokenized/{name}/train")[0]
    tokenizer = AutoTokenizer.from_pretrained("models/base/tiny")
    words = rows_for("token_head", "train", 1)[0]
    first_pieces = [i for i, w in enumerate(row["word_ids"]) if w >= 0 and row["word_ids"][i - 1] != w]
    assert len(first_pieces) == len(words["tokens"])  # every word kept its first sub-token
    assert [row["labels"][i] for i in first_pieces] == [TAGS.index(t) for t in words["tags"]]
    others = [label for i, label in enumerate(row["labels"]) if i not in first_pieces]
    assert others and set(others) == {-100}  # later sub-tokens and [CLS]/[SEP] are ignored by the loss
    assert tokenizer.convert_ids_to_tokens(row["input_ids"][0]) == "[CLS]"


def test_sentence_pairs_keep_their_segment_ids(tmp_path, monkeypatch):
    from datasets import load_from_disk

    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, "bert", "sequence_head", "full")
    tokenize_stage.main([name])
    row = load_from_disk(f"data/tokenized/{name}/train")[1]
    assert row["labels"] == 0  # train-1 is "no", label 0 of labels.json ["no", "yes"]
    assert set(row["token_type_ids"]) == {0, 1} and row["token_type_ids"][0] == 0 and row["token_type_ids"][-1] == 1


def test_a_head_cannot_read_instruction_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, "bert", "sequence_head", "full")
    write_jsonl(tmp_path / "data/converted/toy/train.jsonl", rows_for("causal_lm", "train", 2))
    with pytest.raises(StageError, match="dataset 'toy' holds instruction rows; a sequence_head reads labelled rows"):
        tokenize_stage.main([name])


def test_stop_strings_end_answers_and_seeded_sampling_repeats(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # the tiny GPT-Neo's greedy answers are varied text (the tiny Llama's are all special tokens)
    name = workspace(tmp_path, "gpt_neo", "causal_lm", "lora")
    tokenize_stage.main([name])

    def predict_with(**decoding) -> list[str]:
        edit(Path(f"experiments/{name}.yaml"), "predict", {"batch_size": 2, "max_new_tokens": 12, "decoding": decoding})
        config_stage.main([name])
        predict_stage.main([name, "before"])
        settings = json.loads(Path(f"data/predictions/{name}/before.settings.json").read_text())
        expected = {"max_new_tokens": 12, "do_sample": bool(decoding.get("do_sample")), **decoding}
        expected.pop("seed", None)
        assert settings["decoding"] == ({**expected, "seed": decoding["seed"]} if "seed" in decoding else expected)
        lines = Path(f"data/predictions/{name}/before.jsonl").read_text().splitlines()
        return [json.loads(line)["prediction"] for line in lines]

    greedy = predict_with()
    text = next(t for t in greedy if len(t.strip()) > 6)
    stop = text.strip()[3:5]  # a string the greedy answer reaches after a few characters
    stopped = predict_with(stop=[stop])
    assert stopped == [t.split(stop, 1)[0].strip() for t in greedy]
    assert any(len(s) < len(t) for s, t in zip(stopped, greedy))
    sampled = predict_with(do_sample=True, temperature=1.0, seed=5)
    assert sampled == predict_with(do_sample=True, temperature=1.0, seed=5) != greedy
    # the decoding seed itself decides the draw, not only the experiment's seed that `before` starts from
    assert predict_with(do_sample=True, temperature=1.0, seed=6) != sampled


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("arch,kind", [("llama", "causal_lm"), ("t5", "seq2seq"), ("bert", "token_head"),
                                       ("bert", "sequence_head")])
def test_chunks_of_any_size_write_the_same_bytes(arch, kind, tmp_path, monkeypatch):
    """The stage streams records in chunks; where the chunks fall must not change a byte of the output."""
    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, arch, kind, "full")
    tokenize_stage.main([name])
    whole = folder_bytes(tmp_path / "data/tokenized" / name)
    monkeypatch.setattr(tokenization, "CHUNK_ROWS", 3)  # 8 training rows: chunks of 3, 3 and 2
    tokenize_stage.main([name])
    assert folder_bytes(tmp_path / "data/tokenized" / name) == whole


def test_causal_rows_are_the_chat_template_tokenized_row_by_row(tmp_path, monkeypatch):
    """One batched tokenizer call and the prompt's end found by character offsets give exactly what
    apply_chat_template(tokenize=True) gives for each row alone, prompt and prompt + answer."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from tunepipe.encoders import prompt_text

    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, "llama", "causal_lm", "lora")
    tokenize_stage.main([name])
    tokenizer = AutoTokenizer.from_pretrained("models/base/tiny")
    assert tokenizer.chat_template and tokenizer.is_fast
    records = {r["id"]: r for r in rows_for("causal_lm", "train", 8)}
    rows = load_from_disk(f"data/tokenized/{name}/train").to_list()
    assert len(rows) == 8
    for row in rows:
        messages = [{"role": "user", "content": prompt_text(records[row["id"]])}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": records[row["id"]]["output"]}],
                                             tokenize=True)["input_ids"]
        assert row["input_ids"] == full and row["prompt_length"] == len(prompt)
        assert row["labels"] == [-100] * len(prompt) + full[len(prompt):]


def test_a_template_whose_prompt_is_not_a_prefix_is_refused(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, "llama", "causal_lm", "lora")
    tokenizer = AutoTokenizer.from_pretrained("models/base/tiny")
    # the generation prompt says "Bot:" but a finished conversation writes "Assistant:": a model trained on
    # the one would be asked with the other
    tokenizer.chat_template = ("{% for m in messages %}{% if m.role == 'user' %}User: {{ m.content }}\n"
                               "{% else %}Assistant: {{ m.content }}\n{% endif %}{% endfor %}"
                               "{% if add_generation_prompt %}Bot:{% endif %}")
    tokenizer.save_pretrained("models/base/tiny")
    with pytest.raises(StageError, match="renders the prompt differently with and without the answer"):
        tokenize_stage.main([name])


def test_an_empty_split_is_counted_and_keeps_its_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, "bert", "token_head", "full")
    write_jsonl(tmp_path / "data/converted/toy/validation.jsonl", [])
    tokenize_stage.main([name])
    counts = json.loads((tmp_path / "reports/tokenize" / f"{name}.json").read_text())
    assert counts["validation"]["rows"] == 0 and counts["train"]["rows"] == 8
    info = json.loads((tmp_path / "data/tokenized" / name / "validation/dataset_info.json").read_text())
    assert set(info["features"]) == {"id", "input_ids", "labels", "word_ids", "prompt_length"}
    assert not list((tmp_path / "data/tokenized" / name / "validation").glob("*.arrow"))  # train reads it as none


def tokenized_lengths(name: str, split: str) -> dict[str, int]:
    from datasets import load_from_disk

    rows = load_from_disk(f"data/tokenized/{name}/{split}")
    return dict(zip(rows["id"], (len(ids) for ids in rows["input_ids"])))


def test_validation_rows_past_max_length_are_left_out_like_training_rows(tmp_path, monkeypatch):
    """Validation measures the rows training sees, and no validation batch outgrows the memory check's;
    every test row is still kept (scores cover the whole split)."""
    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, "llama", "causal_lm", "lora")
    tokenize_stage.main([name])
    lengths = {split: tokenized_lengths(name, split) for split in ("train", "validation", "test")}
    limit = min(lengths["validation"].values())  # the shortest validation row fits; the longer one does not
    assert max(lengths["validation"].values()) > limit
    edit(tmp_path / "experiments/toy.yaml", "tokenize.max_length", limit)
    config_stage.main([name])
    tokenize_stage.main([name])
    assert max(tokenized_lengths(name, "validation").values()) <= limit
    dropped = [json.loads(line) for line in (tmp_path / "data/tokenized" / name / "dropped.jsonl").read_text().splitlines()]
    assert {row["id"] for row in dropped if row["split"] == "validation"} == {
        row_id for row_id, length in lengths["validation"].items() if length > limit}
    assert set(tokenized_lengths(name, "test")) == set(lengths["test"])


def test_a_row_that_cannot_fit_the_context_fails_tokenize_naming_it(tmp_path, monkeypatch):
    """A row longer than a learned position table (GPT-2's; max_length allows what the table does not) fails
    tokenize saying which row, how long, and what to change, rather than training failing on an index past
    the table. eval_max_length, which only says how far test prompts are cut, does not count against it; a
    model that computes its positions (rotary: Llama) takes the row."""
    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, "gpt2", "causal_lm", "lora")
    edit(tmp_path / "experiments/toy.yaml", "tokenize.eval_max_length", 4)
    config_stage.main([name])
    tokenize_stage.main([name])  # test prompts cut to 4 tokens' room: every row still fits the model
    config = json.loads((tmp_path / "models/base/tiny/config.json").read_text())
    (tmp_path / "models/base/tiny/config.json").write_text(json.dumps({**config, "n_positions": 8}))
    with pytest.raises(StageError, match=r"experiments/toy.yaml tokenize: train row [\w-]+: \d+ tokens \(\d+ of prompt\) "
                                         r"cannot fit the model's context of 8 positions \(set max_length to at most 8\)"):
        tokenize_stage.main([name])
    rotary = tmp_path / "rotary"
    rotary.mkdir()
    monkeypatch.chdir(rotary)
    name = workspace(rotary, "llama", "causal_lm", "lora")
    config = json.loads((rotary / "models/base/tiny/config.json").read_text())
    (rotary / "models/base/tiny/config.json").write_text(json.dumps({**config, "max_position_embeddings": 8}))
    tokenize_stage.main([name])
