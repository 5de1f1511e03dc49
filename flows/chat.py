"""Talk to a model of the pipeline by its experiment name: the base, its adapter, or the merged model.

    python -m flows.chat webqa-lora                         # interactive; tokens stream as they are generated
    python -m flows.chat webqa-lora --prompt "..."          # answer once and exit (scripts, tests)
    python -m flows.chat webqa-lora --evidence "..." --prompt "question"   # WebQA's way: evidence + question
    python -m flows.chat dialogsum-lora --model base        # base | adapter | merged (default: the newest made)
    python -m flows.chat mrpc-head --profile profiles/real  # an experiment of a profile folder

The prompt goes through the model's chat template (with the experiment's `tokenize.system_prompt`),
as in training; `--evidence` fills the WebQA converter's prompt template. Decoding is greedy unless
`--temperature` is given (then sampled with `--seed`). Only models that generate chat; a head predicts labels.
"""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from tunepipe.errors import StageError
from tunepipe.stage import run_stage
from tunepipe.settings import load_experiment
from tunepipe.sources import data_params

MODELS = ("base", "adapter", "merged")


def folders(experiment: str, setup: dict) -> dict[str, Path]:
    return {"base": Path("models/base") / setup["model"], "adapter": Path("models/trained") / experiment,
            "merged": Path("models/merged") / experiment}


def pick_model(experiment: str, setup: dict, which: str | None) -> tuple[str, Path]:
    paths = folders(experiment, setup)
    if which is None:  # the most finished model there is
        which = next((name for name in ("merged", "adapter", "base") if paths[name].exists()), "base")
    if not paths[which].exists():
        stage = {"base": f"fetch_model@{setup['model']}", "adapter": f"train@{experiment}",
                 "merged": f"merge@{experiment}"}[which]
        raise StageError(f"{paths[which]}: not found (run dvc repro {stage})")
    return which, paths[which]


def load(setup: dict, which: str, folder: Path):
    from tunepipe.devices import device
    from tunepipe.loading import load_base, load_tokenizer, load_trained

    base = Path("models/base") / setup["model"]
    if which == "adapter":
        model = load_trained(base, folder)
    else:
        model = load_base(setup["kind"], folder, qlora=setup["qlora"] if which == "base" else None).eval()
    if setup["qlora"] is None or which == "merged":  # a 4-bit model is placed as it loads
        model.to(device())
    return model, load_tokenizer(base)


def prompt_ids(tokenizer, text: str, system: str | None, history: list[dict], encoder_decoder: bool) -> list[int]:
    if encoder_decoder or not tokenizer.chat_template:  # T5, or a base model without a template
        return tokenizer(text + ("" if encoder_decoder else "\n\n"))["input_ids"]
    messages = ([{"role": "system", "content": system}] if system else []) + history + [
        {"role": "user", "content": text}]
    from tunepipe.encoders import ids_of

    return ids_of(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))


def answer(model, tokenizer, ids: list[int], options: dict, stream) -> str:
    """Generate; with `stream`, print tokens as they come (a thread generates while this one prints)."""
    import torch
    from transformers import TextIteratorStreamer

    inputs = {"input_ids": torch.tensor([ids], device=model.device)}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if stream is None:
        with torch.no_grad():
            output = model.generate(**inputs, pad_token_id=pad, **options)
        new = output[0] if model.config.is_encoder_decoder else output[0, len(ids):]
        return tokenizer.decode(new, skip_special_tokens=True).strip()
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=not model.config.is_encoder_decoder,
                                    skip_special_tokens=True)

    failure: list[BaseException] = []

    def run():
        try:
            with torch.no_grad():
                model.generate(**inputs, pad_token_id=pad, streamer=streamer, **options)
        except BaseException as err:  # noqa: BLE001 - handed to the printing thread, raised there
            failure.append(err)
        finally:
            streamer.end()  # else the loop below would wait for tokens forever

    worker = threading.Thread(target=run, daemon=True)  # Ctrl-C ends the program, not only the printing
    worker.start()
    pieces = []
    for piece in streamer:
        pieces.append(piece)
        stream.write(piece)
        stream.flush()
    worker.join()
    stream.write("\n")
    if failure:
        raise failure[0]
    return "".join(pieces).strip()


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m flows.chat", description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--model", choices=MODELS, help="default: merged, else adapter, else base")
    parser.add_argument("--prompt", help="answer this once and exit")
    parser.add_argument("--evidence", help="WebQA: the evidence the question is asked about")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, help="sample at this temperature (default: greedy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-stream", action="store_true", help="print the whole answer at the end")
    args = parser.parse_args(argv)
    if args.temperature is not None and args.temperature <= 0:
        raise StageError("--temperature: a number > 0 (leave it out for greedy decoding)")
    return args


def converse(reply, no_stream: bool) -> None:
    """One conversation at the prompt; its turns go back through the chat template."""
    history: list[dict] = []
    while True:
        try:
            text = input("> ")
        except EOFError:
            print()
            return
        if text.strip() in ("", "/exit", "/quit"):
            if text.strip():
                return
            continue
        response = reply(text, history)
        if no_stream:
            print(response)
        history += [{"role": "user", "content": text}, {"role": "assistant", "content": response}]


def main(argv: list[str]) -> None:
    args = arguments(argv)
    setup = load_experiment(args.experiment, "predict")
    if not setup["generates"]:
        raise StageError(f"{args.experiment}: a {setup['kind']} predicts labels, it does not chat "
                         f"(its predictions: data/predictions/{args.experiment}/)")
    which, folder = pick_model(args.experiment, setup, args.model)
    template = None
    if args.evidence is not None:
        from tunepipe.formats.webqa import OPTIONS
        spec, _ = data_params(setup["dataset"])
        template = {**OPTIONS, **(spec.get("options") or {})}["prompt_template"]
    system = load_experiment(args.experiment, "tokenize")["tokenize"].get("system_prompt")

    from transformers import set_seed

    model, tokenizer = load(setup, which, folder)
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    options = {"max_new_tokens": args.max_new_tokens, "do_sample": args.temperature is not None}
    if args.temperature is not None:
        options["temperature"] = args.temperature
        set_seed(args.seed)
    print(f"[chat] {args.experiment}: {which} model from {folder}", file=sys.stderr)

    def reply(text: str, history: list[dict]) -> str:
        if template is not None:
            text = template.format(evidence=args.evidence, question=text)
        ids = prompt_ids(tokenizer, text, system, history, encoder_decoder)
        return answer(model, tokenizer, ids, options, None if args.no_stream else sys.stdout)

    if args.prompt is None:
        converse(reply, args.no_stream)
        return
    text = reply(args.prompt, [])
    if args.no_stream:
        print(text)


if __name__ == "__main__":
    run_stage(main)
