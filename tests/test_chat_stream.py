"""flows.chat streams an answer piece by piece as it is generated, and the pieces make up exactly the
answer greedy decoding gives without streaming (a tiny phi, whose greedy answer mixes words and Chinese
characters: the streamer hands text on at spaces and at each CJK character)."""
from __future__ import annotations

from transformers import AutoModelForCausalLM, AutoTokenizer

from flows.chat import answer
from tests.tiny_models import write_tiny_model


class Recorder:
    def __init__(self):
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def test_tokens_arrive_one_by_one_and_add_up_to_the_whole_answer(tmp_path):
    folder = write_tiny_model("phi", tmp_path / "tiny", seed=1)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("The meeting is at noon. Summary:")["input_ids"]
    options = {"max_new_tokens": 16, "do_sample": False}
    whole = answer(model, tokenizer, ids, options, stream=None)
    recorder = Recorder()
    streamed = answer(model, tokenizer, ids, options, stream=recorder)
    pieces = [piece for piece in recorder.writes[:-1] if piece]
    assert len(pieces) >= 3 and recorder.writes[-1] == "\n"  # several pieces before the end, not one at the end
    assert streamed == whole and "".join(pieces).strip() == whole and len(whole) > 10
