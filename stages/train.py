"""train: fine-tune models/base/<model> on data/tokenized/<experiment> -> models/trained/<experiment>/.

The experiment's kind and method (LoRA, QLoRA, prompt tuning, full) pick the model (tunepipe/loading.py);
the Trainer loop is the same for all of them (tunepipe/training.py). Curves go to
reports/train/<experiment>/live/ through DVCLive; checkpoints to checkpoints/<experiment>/, outside DVC's
outputs, so a killed run resumes and ends with the same weights; a memory estimate runs before the first
step. bf16 (fp16 where the GPU does not compute in bf16 natively) on a GPU, fp32 on a CPU (bf16 for an
adapter where the CPU computes in it); the precision and device it resolved to are in the checkpoints'
fingerprint and in recipe.json. What reloads the model is saved as safetensors; totals go to summary.json
and the wall-clock speed to reports/speed/<experiment>.json (neither a DVC output nor in git: it differs on
every run).
"""
from __future__ import annotations

from pathlib import Path

from tunepipe import checkpoints, training
from tunepipe.collators import collator_for
from tunepipe.devices import (
    deterministic_cuda,
    device_description,
    one_process_one_gpu,
    pin_threads,
    qlora_compute_dtype,
    resolved_precision,
)
from tunepipe.files import atomic_dir, write_json
from tunepipe.loading import load_tokenizer, save_trained
from tunepipe.preference_training import without_reference
from tunepipe.settings import load_experiment, read_labels, where as setting
from tunepipe.stage import one_item, run_stage


def main(argv: list[str]):
    """Train, save, log; returns the trained model for a caller in the same process (tests compare it
    with the model reloaded from disk)."""
    experiment = one_item(argv, "train")
    setup = load_experiment(experiment, "train")  # checked by the config stage: types, ranges, required keys
    params = setup.pop("train")
    if setup["qlora"]:  # `auto` resolved here, so recipe.json records what the 4-bit base computed in
        setup["qlora"] = {**setup["qlora"], "compute_dtype": qlora_compute_dtype(setup["qlora"]["compute_dtype"])}
    where = setting(experiment, "train")
    base = Path("models/base") / setup["model"]
    one_process_one_gpu(int(params.get("processes") or 1))
    deterministic_cuda()  # before CUDA's first use: the same params give the same bytes on a GPU too
    run = {"precision": resolved_precision(params.get("precision"), setup["kind"], setup["method"]),
           "device": device_description()}
    data = checkpoints.data_digest(Path("data/tokenized") / experiment)  # for the checkpoints and the recipe
    resume = training.resume_point(experiment, setup, params, data, base, run, where)
    training.launch_processes(experiment, params, resume)

    from transformers import set_seed

    pin_threads(params["threads"])
    set_seed(setup["seed"])  # before a head or adapter is initialised
    labels = read_labels(setup) if not setup["generates"] else None
    # train and validation splits only: a test-only change never retrains
    train_rows = training.split_rows(experiment, "train", params.get("max_train_rows"), setup["seed"])
    eval_rows = training.split_rows(experiment, "validation", params.get("max_eval_rows"), setup["seed"])
    tokenizer = load_tokenizer(base)
    if setup.get("chat_template"):  # a GRPO run renders its prompts with the template tokenize used
        tokenizer.chat_template = setup["chat_template"]
    budget = training.memory_budget(params)
    model, stored = training.build_model(setup, params, base, run, labels)
    cpu_bf16 = stored == "bfloat16" and run["device"] == "cpu"  # computes in the stored bf16, with no autocast
    args = training.training_arguments(params, setup, checkpoints.ROOT / experiment, evaluate=eval_rows is not None,
                                       precision="fp32" if cpu_bf16 else run["precision"])
    needs = training.check_memory(model, params, args, (train_rows, eval_rows), labels, setup, base, stored,
                                  budget, where)
    collator = None if setup.get("objective") else collator_for(setup["kind"], tokenizer, model)  # TRL has its own
    reports = Path("reports/train") / experiment
    trainer = training.build_trainer(model, args, setup, (train_rows, eval_rows), collator, tokenizer, cpu_bf16, reports)
    speed = training.timed_training(trainer, resume)
    # with several processes every one of them takes part in gathering the weights; the first one writes
    gathered = trainer.accelerator.get_state_dict(trainer.model) if args.world_size > 1 else None
    if not trainer.is_world_process_zero():
        return model
    with atomic_dir(Path("models/trained") / experiment) as out:
        save_trained(without_reference(model), out, setup["kind"], setup["method"], labels, setup["qlora"], gathered, data, run)
    checkpoints.remove(checkpoints.ROOT / experiment)  # the result is saved: the checkpoints have served

    summary = training.summarize(trainer, collator, train_rows, model, needs, reports, where)
    write_json(reports / "summary.json", summary)
    write_json(Path("reports/speed") / f"{experiment}.json", speed)  # wall-clock: differs run to run, kept apart
    print(f"[train] {experiment}: {summary['steps']} steps, loss {summary['first_loss']:.3f} -> "
          f"{summary['final_loss']:.3f}" + (f", validation loss {summary['final_eval_loss']:.3f}"
                                              if summary["final_eval_loss"] is not None else "")
          + f", {summary['real_tokens']} tokens at {speed['tokens_per_second']}/s"
          + (f", padding {summary['pad_fraction']:.1%}" if summary["pad_fraction"] is not None else ""))
    return model


if __name__ == "__main__":
    run_stage(main)
