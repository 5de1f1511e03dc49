"""Preference pairs in the shapes TRL and LLaMA-Factory write (files written here, in those projects' own
layouts), each read into TRL's standard or conversational shape; bad pairs kept with their reason; and the
columns a chat or instruction reader does not read, but which change what a row means, refused by it."""
from __future__ import annotations

import json

from tests.formats.test_own_data import jsonl, reasons, run
from tunepipe.formats import alpaca, messages, preference, sharegpt

USER = [{"role": "user", "content": "Capital of France?"}]
PARIS = [{"role": "assistant", "content": "Paris."}]
LYON = [{"role": "assistant", "content": "Lyon."}]


def test_trl_shapes_standard_conversational_and_implicit_prompt(tmp_path):
    jsonl(tmp_path / "trl.jsonl", [
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
        {"prompt": USER, "chosen": PARIS, "rejected": LYON},
        {"chosen": [*USER, *PARIS], "rejected": [*USER, *LYON]},
        {"chosen": "The sky is blue.", "rejected": "The sky is green."},
        {"chosen": "Grass is green.", "rejected": "Grass is blue."}])
    records, ledger = run(preference, tmp_path)
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in records] == [
        ("The sky is", " blue.", " green."), (USER, PARIS, LYON),
        ("Grass is", " green.", " blue.")]  # TRL's extract_prompt keeps the space with the answer
    assert {r["kind"] for r in records} == {"preference"} and not ledger.rejected
    # an implicit prompt is the same pair as the explicit one: the same record, dropped as a repeat
    assert reasons(ledger) == {"trl.jsonl:3": "duplicate: the same content as trl.jsonl:2",
                               "trl.jsonl:4": "duplicate: the same content as trl.jsonl:1"}


def test_llama_factory_sharegpt_and_alpaca_preference_files(tmp_path):
    # the layout of LLaMA-Factory's data/dpo_en_demo.json (sharegpt) and of its alpaca preference files
    (tmp_path / "dpo_en_demo.json").write_text(json.dumps([
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
                           {"from": "human", "value": "Capital of France?"}],
         "chosen": {"from": "gpt", "value": "Paris."}, "rejected": {"from": "gpt", "value": "Lyon."}},
        {"conversations": [{"from": "human", "value": "Hi"}], "system": "Be brief.",
         "chosen": {"from": "gpt", "value": "Hello."}, "rejected": {"from": "gpt", "value": "Hello there, friend!"}}]))
    (tmp_path / "alpaca_pref.jsonl").write_text(json.dumps(
        {"instruction": "Name a colour.", "input": "of the sky", "chosen": "Blue.", "rejected": "Loud."}) + "\n")
    records, ledger = run(preference, tmp_path)
    alpaca_pair, first, second = records  # files in path order
    assert alpaca_pair["prompt"] == [{"role": "user", "content": "Name a colour.\n\nof the sky"}]
    assert (alpaca_pair["chosen"], alpaca_pair["rejected"]) == ([{"role": "assistant", "content": "Blue."}],
                                                                [{"role": "assistant", "content": "Loud."}])
    assert first["prompt"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, *USER]
    assert first["chosen"] == PARIS and first["rejected"] == LYON
    assert second["prompt"][0] == {"role": "system", "content": "Be brief."} and not ledger.rejected


def test_bad_pairs_are_kept_with_their_reason(tmp_path):
    jsonl(tmp_path / "bad.jsonl", [
        {"prompt": USER, "chosen": PARIS, "rejected": PARIS},
        {"prompt": USER, "chosen": PARIS, "rejected": [{"role": "assistant", "content": " "}]},
        {"prompt": USER, "chosen": PARIS},
        {"chosen": [*USER, *PARIS], "rejected": [{"role": "user", "content": "Capital of Spain?"}, *LYON]},
        {"prompt": [*USER, *PARIS], "chosen": PARIS, "rejected": LYON},
        {"prompt": USER, "completion": PARIS, "label": "yes"},
        {"chosen": "Blue.", "rejected": "Green."},
        {"prompt": "The sky is", "chosen": PARIS, "rejected": " green."},
        {"conversations": [{"from": "human", "value": "Weather?"}], "tools": '[{"name": "forecast"}]',
         "chosen": {"from": "gpt", "value": "Sunny."}, "rejected": {"from": "gpt", "value": "No idea."}}])
    records, ledger = run(preference, tmp_path)
    assert records == []
    assert reasons(ledger) == {
        "bad.jsonl:1": "chosen and rejected are the same answer: nothing to prefer",
        "bad.jsonl:2": "empty text: rejected",
        "bad.jsonl:3": "missing field: rejected (or rejected_messages)",
        "bad.jsonl:4": "chosen and rejected differ before their last turn: the two sides have different prompts",
        "bad.jsonl:5": "prompt: the last turn must be the user's (the answers are in chosen and rejected)",
        "bad.jsonl:6": "label: 'yes' is not true or false (desirable or not)",
        "bad.jsonl:7": "chosen and rejected share no prompt (an implicit prompt is the text both start with)",
        "bad.jsonl:8": "a text prompt takes text answers (a conversational prompt is a list of turns)",
        "bad.jsonl:9": "column 'tools' is not read: the prompt would lose the tools it offers the model"}
    assert ledger.read == 9


def test_chat_readers_refuse_what_they_would_otherwise_drop(tmp_path):
    """LLaMA-Factory's kto_en_demo.json read as messages used to train on the answers labelled bad; its
    v1_sft_demo.jsonl (parts written {type, value}, per-turn loss_weight) used to fail as 'empty content'.
    A loss_weight that says what training does anyway (assistant 1, others 0) reads; another is refused,
    by every reader that sees turns (sharegpt with role/content keys once dropped it unseen)."""
    v1 = lambda text, weight: {"type": "text", "value": text}  # noqa: E731
    rows = [
        {"messages": [*USER, {"role": "assistant", "content": "Lyon."}], "label": False},
        {"messages": [{"role": "user", "content": [v1("Capital of France?", 0)], "loss_weight": 0.0},
                      {"role": "assistant", "content": [v1("Paris.", 1)], "loss_weight": 1.0}]},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "bad a1", "loss_weight": 0.0},
                      {"role": "user", "content": "Again"}, {"role": "assistant", "content": "Hello."}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "words": "?"}]}, *PARIS]}]
    weight_reason = ("turn 2: loss_weight 0.0 on the assistant's turn: only the usual weights are read (1 on the "
                     "assistant's turns, 0 on the others)")
    (tmp_path / "m").mkdir()
    jsonl(tmp_path / "m/kto.jsonl", rows)
    records, ledger = run(messages, tmp_path / "m")
    assert [r["messages"] for r in records] == [[*USER, *PARIS]]  # the v1 parts, read through `value`
    assert reasons(ledger) == {
        "kto.jsonl:1": "column 'label' is not read by format messages, and it marks the row's answer desirable or "
                       "not (KTO data: format preference)",
        "kto.jsonl:3": f"messages {weight_reason}",
        "kto.jsonl:4": "messages turn 1: a text part has neither 'text' nor 'value' (keys: type, words)"}
    (tmp_path / "sr").mkdir()
    jsonl(tmp_path / "sr/chats.jsonl", rows[2:3])
    records, ledger = run(sharegpt, tmp_path / "sr", {"columns": {"messages": "messages"}, "role_key": "role",
                                                      "content_key": "content"})
    assert records == [] and list(reasons(ledger).values()) == [f"conversations {weight_reason}"]
    (tmp_path / "s").mkdir()
    jsonl(tmp_path / "s/dpo.jsonl", [{"conversations": [{"from": "human", "value": "Hi"}],
                                      "chosen": {"from": "gpt", "value": "Hello."},
                                      "rejected": {"from": "gpt", "value": "Go away."}}])
    records, ledger = run(sharegpt, tmp_path / "s")
    assert records == [] and list(reasons(ledger).values()) == [
        "column 'chosen' is not read by format sharegpt, and it makes the row a preference pair (format: preference)"]
    (tmp_path / "a").mkdir()
    jsonl(tmp_path / "a/pref.jsonl", [{"instruction": "Hi", "chosen": "Hello.", "rejected": "Go away."}])
    records, ledger = run(alpaca, tmp_path / "a")
    assert records == [] and "format alpaca" in list(reasons(ledger).values())[0]


def test_llama_factory_v1_preference_rows_read_as_whole_conversations(tmp_path):
    """The layout of LLaMA-Factory's v1_dpo_demo.jsonl: chosen_messages and rejected_messages, v1 parts and
    weights; the prompt is the turns both share."""
    def conversation(answer: str) -> list[dict]:
        return [{"role": "system", "content": [{"type": "text", "value": "Be brief."}], "loss_weight": 0.0},
                {"role": "user", "content": [{"type": "text", "value": "Capital of France?"}], "loss_weight": 0.0},
                {"role": "assistant", "content": [{"type": "text", "value": answer}], "loss_weight": 1.0}]
    jsonl(tmp_path / "v1_dpo_demo.jsonl", [{"chosen_messages": conversation("Paris."),
                                            "rejected_messages": conversation("Lyon.")}])
    (record,), ledger = run(preference, tmp_path)
    assert record["prompt"] == [{"role": "system", "content": "Be brief."}, *USER]
    assert (record["chosen"], record["rejected"]) == (PARIS, LYON) and not ledger.rejected


def test_unpaired_rows_of_trl_and_llama_factory_s_kto_files_keep_their_label(tmp_path):
    # the layout of LLaMA-Factory's data/kto_en_demo.json: messages ending with the answer, a boolean label
    (tmp_path / "kto_en_demo.json").write_text(json.dumps([
        {"messages": [*USER, *PARIS], "label": True}, {"messages": [*USER, *LYON], "label": False},
        {"messages": USER, "label": True}]))
    jsonl(tmp_path / "trl.jsonl", [{"prompt": "The sky is", "completion": " blue.", "label": True},
                                   {"prompt": USER, "completion": LYON, "label": False},
                                   {"prompt": "The sky is", "label": False}])
    records, ledger = run(preference, tmp_path)
    assert [(r["kind"], r["prompt"], r["completion"], r["label"]) for r in records] == [
        ("unpaired", USER, PARIS, True), ("unpaired", USER, LYON, False), ("unpaired", "The sky is", " blue.", True)]
    assert reasons(ledger) == {
        "kto_en_demo.json#2": "messages: the last turn must be the assistant's (the answer to learn)",
        "trl.jsonl:2": "duplicate: the same content as kto_en_demo.json#1",
        "trl.jsonl:3": "missing field: completion (or messages ending with the answer)"}
