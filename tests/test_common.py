"""The shared contract: seeded choices that never move, a ledger that balances, outputs that are atomic."""
from __future__ import annotations

import pytest

from tunepipe.errors import StageError
from tunepipe.files import atomic_dir
from tunepipe.ledger import Ledger
from tunepipe.settings import load_params
from tunepipe.splits import split_for, stable_choice, stable_fraction


def test_stable_fraction_is_pinned_across_runs_and_platforms():
    # sha256(b"\x00test_0")[:8] as a big-endian fraction; a change here would silently reshuffle every split
    assert stable_fraction("test_0") == 0.9158224990264463
    assert stable_choice("Q_TRN_000001#00", list("abcdefghij")) == (5, "f")


def test_salt_changes_the_draw_and_split_follows_ratios():
    assert stable_fraction("x", salt="a") != stable_fraction("x", salt="b")
    ratios = {"train": 0.8, "validation": 0.1, "test": 0.1}
    counts = {"train": 0, "validation": 0, "test": 0}
    for number in range(5000):
        counts[split_for(f"row-{number}", ratios)] += 1
    assert 3850 < counts["train"] < 4150 and 400 < counts["test"] < 600


def test_a_row_keeps_its_split_when_rows_are_added_before_and_after_it(tmp_path):
    """Through the convert stage: splits come from each row's own id, never from its place in the file."""
    from tunepipe.conversion import convert

    rows = [f"Sentence number {n} is fine.,{'positive' if n % 2 else 'negative'}" for n in range(300)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a/rows.csv").write_text("text,label\n" + "\n".join(rows[100:200]) + "\n")
    (tmp_path / "b/rows.csv").write_text("text,label\n" + "\n".join(rows[:100] + rows[200:] + rows[100:200]) + "\n")
    params = {"format": "table", "split": {"train": 0.6, "validation": 0.2, "test": 0.2}}
    before = {r["text"]: split for split, rs in convert(tmp_path / "a", params, Ledger("a")).items() for r in rs}
    after = {r["text"]: split for split, rs in convert(tmp_path / "b", params, Ledger("b")).items() for r in rs}
    assert len(before) == 100 and len(after) == 300 and len(set(before.values())) == 3
    assert {text: after[text] for text in before} == before


def test_ledger_balances_and_fails_past_the_reject_rate(capsys):
    ledger = Ledger("convert demo")
    ledger.read = 4
    ledger.written["train"] = 3
    ledger.reject("a.jsonl:2", "missing field: summary", {"fname": "x"})
    ledger.check(max_reject_rate=0.25)
    assert "read 4, written 3" in capsys.readouterr().out
    with pytest.raises(StageError, match=r"25.0% of records rejected .*a.jsonl:2: missing field: summary"):
        ledger.check(max_reject_rate=0.1)
    ledger.read = 5  # one record neither written nor rejected: lost
    with pytest.raises(StageError, match="does not balance"):
        ledger.check(max_reject_rate=1.0)


def test_atomic_dir_leaves_nothing_when_the_stage_dies(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final) as out:
        (out / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as out:
            (out / "a.txt").write_text("half-written")
            raise RuntimeError("killed")
    assert (final / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind


KILLED_MID_WRITE = """
import os, signal, sys
from tunepipe.files import atomic_dir, atomic_file
with atomic_file(sys.argv[1] + "/model.json") as handle, atomic_dir(sys.argv[1] + "/weights") as folder:
    handle.write('{"half": ')
    handle.flush()
    (folder / "shard-1.bin").write_bytes(b"1" * 100)
    os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would: no cleanup runs
"""


def test_a_writer_killed_outright_leaves_no_output_and_the_next_write_clears_its_temporaries(tmp_path):
    import subprocess
    import sys

    from tunepipe.files import atomic_file

    killed = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(tmp_path)])
    assert killed.returncode == -9
    left = sorted(p.name for p in tmp_path.iterdir())
    assert [name.split(".tmp-")[0] for name in left] == [".model.json", ".weights"]  # half-written, never renamed
    live = tmp_path / ".model.json.tmp-1-x"  # pid 1 is alive: another writer's file is not ours to remove
    live.write_text("")
    with atomic_file(tmp_path / "model.json") as handle:
        handle.write("{}")
    with atomic_dir(tmp_path / "weights") as folder:
        (folder / "shard-1.bin").write_bytes(b"2")
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "model.json", "weights"]


def test_the_sweep_removes_a_killed_writers_temporaries_anywhere_but_not_a_live_ones(tmp_path):
    """What the flow runs first: a killed stage whose output DVC restores from its run cache never writes that
    output again, so no next write would clear its temporaries."""
    import subprocess
    import sys

    from flows.cache_check import sweep_orphaned_temporaries

    nested = tmp_path / "data/raw"
    nested.mkdir(parents=True)
    assert subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(nested)]).returncode == -9
    live = nested / ".model.json.tmp-1-x"  # pid 1 is alive
    live.write_text("")
    hidden = tmp_path / ".venv/lib/.x.tmp-999999999-y"  # never entered: no output lives in a hidden folder
    hidden.parent.mkdir(parents=True)
    hidden.write_text("")
    removed = sweep_orphaned_temporaries(tmp_path)
    assert sorted(p.name.split(".tmp-")[0] for p in removed) == [".model.json", ".weights"]
    assert sorted(p.name for p in nested.iterdir()) == [live.name] and hidden.exists()
    assert sweep_orphaned_temporaries(tmp_path) == []


def test_missing_params_entry_names_file_and_key(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  dialogsum: {epochs: 1}\n")
    assert load_params("train", "dialogsum", params) == {"epochs": 1}
    with pytest.raises(StageError, match=r"params.yaml: 'train' has no entry 'webqa' \(known: dialogsum\)"):
        load_params("train", "webqa", params)
