"""The generic readers for a user's own data: Alpaca, ShareGPT, OpenAI/TRL messages, plain text and tables
(CSV, TSV, JSON lines, JSON, Parquet). Each good row becomes one record, each bad row is kept with its place
and reason, exact repeats are dropped as duplicates, and ids do not depend on row order."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunepipe.errors import StageError
from tunepipe.ledger import Ledger
from tunepipe.conversion import convert, label_order
from tunepipe.formats import alpaca, messages, sharegpt, table, text
from tests.conftest import shared_file


def run(reader, folder, options=None):
    ledger = Ledger("t")
    records = list(reader.read(folder, options or {}, ledger))
    return records, ledger


def reasons(ledger: Ledger) -> dict[str, str]:
    return {entry["where"]: entry["reason"] for entry in ledger.rejected + ledger.dropped}


def jsonl(path, rows) -> None:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))


def test_alpaca_rows_become_instructions_and_history_becomes_a_chat(tmp_path):
    rows = [{"instruction": "Convert 2 km to m.", "input": "", "output": "2 km is 2,000 m."},
            {"instruction": "Plural?", "input": "mouse", "output": "mice", "system": "Answer in one word."},
            {"instruction": "And child?", "output": "children", "history": [["Plural of mouse?", "mice"]]},
            {"instruction": "No answer"},
            {"instruction": "Bad history", "output": "x", "history": ["just a string"]}]
    (tmp_path / "data.json").write_text(json.dumps(rows))
    records, ledger = run(alpaca, tmp_path)
    assert [r["kind"] for r in records] == ["instruction", "instruction", "chat"]
    assert records[1]["system"] == "Answer in one word." and records[1]["input"] == "mouse"
    assert records[2]["messages"] == [{"role": "user", "content": "Plural of mouse?"},
                                      {"role": "assistant", "content": "mice"},
                                      {"role": "user", "content": "And child?"},
                                      {"role": "assistant", "content": "children"}]
    assert reasons(ledger) == {"data.json#3": "missing field: output",
                               "data.json#4": "history: expected a list of [user, assistant] pairs"}
    assert ledger.read == 5


def test_alpaca_columns_rename_fields_as_llama_factory_does(tmp_path):
    jsonl(tmp_path / "train.jsonl", [{"prompt": "Say hi.", "query": "", "response": "Hi!"}])
    records, ledger = run(alpaca, tmp_path, {"columns": {"instruction": "prompt", "input": "query", "output": "response"}})
    assert records[0]["output"] == "Hi!" and records[0]["split"] == "train" and not ledger.rejected


def test_sharegpt_maps_speakers_to_roles_and_checks_the_turns(tmp_path):
    good = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                              {"from": "gpt", "value": "Hello"}, {"from": "human", "value": "Bye"},
                              {"from": "gpt", "value": "Goodbye"}]}
    jsonl(tmp_path / "chats.jsonl", [
        good,
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "function_call", "value": "{}"}]},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "human", "value": "Hello?"},
                           {"from": "gpt", "value": "Yes"}]},
        {"conversations": [{"from": "human", "value": "Hi"}]},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "  "}]},
        '{"conversations": [',
        good,
    ])
    records, ledger = run(sharegpt, tmp_path)
    assert len(records) == 1 and [m["role"] for m in records[0]["messages"]] == [
        "system", "user", "assistant", "user", "assistant"]
    assert reasons(ledger) == {
        "chats.jsonl:2": "conversations turn 2: speaker 'function_call' has no role (roles: assistant, bard, chatgpt, "
                         "gpt, human, model, system, user; tool turns are not supported)",
        "chats.jsonl:3": "conversations turn 2: user where the assistant speaks (a system turn may only open; user "
                         "and assistant alternate)",
        "chats.jsonl:4": "conversations: the last turn must be the assistant's (the answer to learn)",
        "chats.jsonl:5": "conversations turn 2: empty content",
        "chats.jsonl:6": "malformed JSON: Expecting value (column 20)",
        "chats.jsonl:7": "duplicate: the same content as chats.jsonl:1"}
    assert ledger.read == 7 and len(ledger.dropped) == 1


def test_sharegpt_takes_its_own_role_names_and_keys(tmp_path):
    jsonl(tmp_path / "x.jsonl", [{"dialog": [{"speaker": "customer", "text": "Open?"}, {"speaker": "agent", "text": "Yes."}]}])
    records, ledger = run(sharegpt, tmp_path, {"columns": {"messages": "dialog"}, "role_key": "speaker",
                                               "content_key": "text", "roles": {"customer": "user", "agent": "assistant"}})
    assert records[0]["messages"][1] == {"role": "assistant", "content": "Yes."} and not ledger.rejected


def test_messages_rows_take_text_parts_and_refuse_images_and_tools(tmp_path):
    jsonl(tmp_path / "m.jsonl", [
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
                      {"role": "assistant", "content": "Hello"}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x.png"}]},
                      {"role": "assistant", "content": "A cat"}]},
        {"messages": [{"role": "user", "content": "Weather?"}, {"role": "tool", "content": "{}"},
                      {"role": "assistant", "content": "Sunny"}]},
        {"text": "no messages"}])
    records, ledger = run(messages, tmp_path)
    assert records[0]["messages"][0] == {"role": "user", "content": "Hi there"}
    assert reasons(ledger) == {"m.jsonl:2": "messages turn 1: only text content is supported (a 'image_url' part)",
                               "m.jsonl:3": "messages turn 2: role 'tool' is not one of system, user, assistant",
                               "m.jsonl:4": "missing field: messages"}


def test_ids_are_content_hashes_so_reordering_rows_changes_no_split(tmp_path):
    rows = [{"instruction": f"Say {n}.", "output": str(n)} for n in range(20)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    jsonl(tmp_path / "a/rows.jsonl", rows)
    jsonl(tmp_path / "b/rows.jsonl", rows[::-1])
    params = {"format": "alpaca", "split": {"train": 0.5, "validation": 0.25, "test": 0.25}}
    forward, backward = convert(tmp_path / "a", params, Ledger("a")), convert(tmp_path / "b", params, Ledger("b"))
    assert forward == backward and all(forward.values())


def test_text_reads_documents_and_rows_and_rejects_what_is_not_utf8(tmp_path):
    (tmp_path / "guide.md").write_text("# Opening hours\nThe library opens at 9.")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    jsonl(tmp_path / "notes.test.jsonl", [{"body": "The pool opens at 7."}, {"body": ""}])
    records, ledger = run(text, tmp_path, {"columns": {"text": "body"}})
    assert [(r["kind"], r["text"], r.get("split")) for r in records] == [
        ("text", "# Opening hours\nThe library opens at 9.", None), ("text", "The pool opens at 7.", "test")]
    assert reasons(ledger) == {"latin.txt": "not UTF-8", "notes.test.jsonl:2": "empty text: text"}


def test_table_rows_by_the_fields_they_map(tmp_path):
    (tmp_path / "reviews.csv").write_text('text,label\nGreat kettle.,positive\n"Broke, sadly.",negative\n'
                                         "No label,\nextra,positive,field\n")
    records, ledger = run(table, tmp_path)
    assert [(r["kind"], r["text"], r["label"]) for r in records] == [
        ("labelled", "Great kettle.", "positive"), ("labelled", "Broke, sadly.", "negative")]
    assert reasons(ledger) == {"reviews.csv:4": "missing field: label", "reviews.csv:5": "3 fields, the header has 2"}
    assert label_order(table, {}, {"train": records}) == ["negative", "positive"]

    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "dev.tsv").write_text("q\tA\tB\n1\tHe left.\tHe went away.\n0\tIt rained.\tIt was sunny.\n")
    records, _ = run(table, pairs, {"columns": {"label": "q", "text": "A", "text_pair": "B"}, "labels": ["0", "1"]})
    assert records[0]["text_pair"] == "He went away." and records[0]["split"] == "validation"

    tags = tmp_path / "tags"
    tags.mkdir()
    pq.write_table(pa.table({"words": [["IL-2", "binds"], ["p53", "x"]], "ner": [["B-protein", "O"], ["O"]]}),
                   tags / "train-00000-of-00001.parquet")
    records, ledger = run(table, tags, {"columns": {"tokens": "words", "tags": "ner"}})
    assert records == [{"kind": "tokens", "tokens": ["IL-2", "binds"], "tags": ["B-protein", "O"],
                        "id": records[0]["id"], "split": "train"}]
    assert reasons(ledger) == {"train-00000-of-00001.parquet#1": "2 tokens but 1 tags"}


def test_table_refuses_a_label_outside_the_given_labels_and_a_file_it_cannot_read(tmp_path):
    (tmp_path / "r.csv").write_text("text,label\nfine,positive\nmeh,neutral\n")
    records, ledger = run(table, tmp_path, {"labels": ["negative", "positive"]})
    assert len(records) == 1 and reasons(ledger) == {
        "r.csv:3": "unknown label 'neutral' (labels: negative, positive)"}
    (tmp_path / "broken.json").write_text('[{"text": "a", "label": "b"},')
    with pytest.raises(StageError, match=r"broken.json:1: malformed JSON .* none of it can be read"):
        run(table, tmp_path)
    with pytest.raises(StageError, match=r"no \.jsonl, \.json, \.csv, \.tsv, \.parquet file to read"):
        run(table, tmp_path / "nowhere")


def test_real_mrpc_tsv_reads_as_sentence_pairs(tmp_path):
    source = shared_file("mrpc/glue_format/dev.tsv")
    (tmp_path / "dev.tsv").write_bytes(source.read_bytes())  # with its UTF-8 byte order mark
    records, ledger = run(table, tmp_path, {"columns": {"label": "Quality", "text": "#1 String",
                                                      "text_pair": "#2 String"}})
    assert len(records) == 408 and {r["label"] for r in records} == {"0", "1"}  # GLUE's dev split, every pair
    assert {r["split"] for r in records} == {"validation"} and not ledger.rejected and not ledger.dropped
    by_own_id, _ = run(table, tmp_path, {"columns": {"label": "Quality", "text": "#1 String",
                                                   "text_pair": "#2 String", "id": "#1 ID"}})
    assert sorted(r["text"] for r in by_own_id) == sorted(r["text"] for r in records)


def test_a_repeated_id_of_the_file_s_own_is_rejected_not_merged(tmp_path):
    (tmp_path / "r.csv").write_text("id,text,label\n7,good,positive\n7,bad,negative\n")
    records, ledger = run(table, tmp_path)
    assert [r["text"] for r in records] == ["good"]
    assert reasons(ledger) == {"r.csv:3": "duplicate id '7' (first at r.csv:2)"} and len(ledger.rejected) == 1


def test_real_dialogsum_dev_file_reads_as_instructions(tmp_path):
    source = shared_file("dialogsum/dialogsum.dev.jsonl")
    (tmp_path / "dev.jsonl").write_bytes(source.read_bytes())
    records, ledger = run(table, tmp_path, {"columns": {"input": "dialogue", "output": "summary", "id": "fname"}})
    assert len(records) == 500 and not ledger.rejected
    assert records[0]["kind"] == "instruction" and records[0]["input"].startswith("#Person1#")
