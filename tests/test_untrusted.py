"""Untrusted model folders: code shipped beside a model never runs, and pickled weights are never unpickled.

Each trap writes a marker file if it ever executes; the stages' loader must load what is safe and leave the
marker absent."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from tunepipe.loading import load_base
from tests.tiny_models import write_tiny_model


def trap_code(marker: Path) -> str:
    return f"from pathlib import Path\nPath({str(marker)!r}).write_text('remote code ran')\n"


def test_code_shipped_beside_a_model_is_never_run(tmp_path):
    folder = write_tiny_model("llama", tmp_path / "model")
    marker = tmp_path / "remote-code-ran"
    (folder / "evil_modeling.py").write_text(trap_code(marker))
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil_modeling.EvilConfig",
                          "AutoModelForCausalLM": "evil_modeling.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    model = load_base("causal_lm", folder)
    assert type(model).__name__ == "LlamaForCausalLM"  # transformers' own class, not the folder's
    assert not marker.exists()


class Payload:
    """Unpickling this runs code: what a malicious pytorch_model.bin does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pickle ran"))


def test_pickled_weights_are_refused_unread(tmp_path, monkeypatch):
    import torch

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a pickled weights file")

    monkeypatch.setattr(torch, "load", no_unpickling)  # refused before anything reads it, not by torch.load
    folder = write_tiny_model("llama", tmp_path / "model")
    marker = tmp_path / "pickle-ran"
    (folder / "model.safetensors").unlink()
    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump(Payload(marker), handle)
    with pytest.raises(OSError, match="safetensors"):
        load_base("causal_lm", folder)
    assert not marker.exists()
