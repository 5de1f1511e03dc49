"""Comparing two dvc.lock files output by output: what a pure move of code is checked with."""
from __future__ import annotations

import yaml

from tests.conftest import REPO
from tunepipe.locks import differences, output_hashes

LOCK = {"schema": "2.0", "stages": {
    "train@a": {"cmd": "python -m stages.train a",
                "deps": [{"path": "stages/train.py", "hash": "md5", "md5": "d1"}],
                "outs": [{"path": "models/trained/a", "hash": "md5", "md5": "aaa.dir"},
                         {"path": "reports/train/a/summary.json", "hash": "md5", "md5": "s1"}]},
    "report": {"cmd": "python -m stages.report", "outs": [{"path": "reports/README.md", "hash": "md5", "md5": "r1"}]}}}


def test_moved_code_changes_deps_only_and_no_output():
    after = yaml.safe_load(yaml.safe_dump(LOCK))
    after["stages"]["train@a"]["deps"] = [{"path": "tunepipe/training.py", "hash": "md5", "md5": "d2"}]
    assert differences(output_hashes(yaml.safe_dump(LOCK)), output_hashes(yaml.safe_dump(after))) == []


def test_a_changed_output_and_a_missing_stage_are_named():
    after = yaml.safe_load(yaml.safe_dump(LOCK))
    after["stages"]["train@a"]["outs"][1]["md5"] = "s2"
    del after["stages"]["report"]
    assert differences(output_hashes(yaml.safe_dump(LOCK)), output_hashes(yaml.safe_dump(after))) == [
        "changed  train@a: reports/train/a/summary.json: s1 -> s2", "only before  report: reports/README.md"]


def test_every_output_of_the_committed_lock_has_its_md5():
    hashes = output_hashes((REPO / "dvc.lock").read_text(encoding="utf-8"))
    assert len(hashes) > 100 and all(hashes.values())
    assert "report: reports/README.md" in hashes
