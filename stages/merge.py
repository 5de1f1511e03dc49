"""merge: fold a LoRA or QLoRA adapter into its base model -> models/merged/<experiment>/ (safetensors).

A merged model serves like any plain model (no peft at inference, no adapter overhead per layer), and is
what a user ships. The merge checks itself against the adapter model's logits (tunepipe/merging.py) and
saves the result as merge_check.json beside the weights. `by_shard` (default `auto`): a plain LoRA adapter
is folded one safetensors shard of the base at a time (tunepipe/lora_shards.py), the check then holding one
model at a time; other adapters (QLoRA, a head saved beside the adapter) merge as a whole model. The output
carries the base's tokenizer, chat template and generation config, and a model card (README.md) naming the
base, adapter, data and settings that made it. Exists only for experiments whose file says `merge: true`
(or gives merge settings).
"""
from __future__ import annotations

import gc
from pathlib import Path

from tunepipe import merging
from tunepipe.devices import pin_threads
from tunepipe.files import atomic_dir, write_json
from tunepipe.loading import load_trained, read_recipe
from tunepipe.settings import load_experiment, where as setting
from tunepipe.stage import one_item, run_stage


def main(argv: list[str]) -> None:
    experiment = one_item(argv, "merge")
    setup = load_experiment(experiment, "merge")
    params = setup["merge"]
    where = setting(experiment, "merge")
    dtype = merging.check_mergeable(setup, params, where)
    base = Path("models/base") / setup["model"]
    trained = Path("models/trained") / experiment
    recipe = read_recipe(trained)
    by_shard = merging.choose_by_shard(params.get("by_shard", "auto"), setup["method"], trained, base, dtype, where)

    from transformers import AutoTokenizer

    pin_threads(params.get("threads", 2))
    tokenizer = AutoTokenizer.from_pretrained(base)
    adapter_model = load_trained(base, trained, dequantize=True, dtype=dtype)
    expected = merging.expected_logits(adapter_model, tokenizer, trained)
    with atomic_dir(Path("models/merged") / experiment) as out:
        if by_shard:  # the adapter model goes before the merge, so one model is held at a time
            del adapter_model
            gc.collect()
            merged = merging.merge_shards(base, trained, out, dtype, recipe["kind"])
        else:
            merged = adapter_model.merge_and_unload()
            merged.save_pretrained(out, safe_serialization=True)
        check = merging.check_merged(merged, tokenizer, expected, params["tolerance"], by_shard, trained)
        tokenizer.save_pretrained(out)  # with the chat template; the generation config came with the weights
        write_json(out / "merge_check.json", check)
        (out / "README.md").write_text(merging.model_card(experiment, setup, recipe, check, by_shard, trained),
                                       encoding="utf-8")
    print(f"[merge] {trained} + {base} -> models/merged/{experiment} "
          f"({'by shard' if by_shard else 'whole'}, logits within {check['max_abs_logit_difference']:.2g})")


if __name__ == "__main__":
    run_stage(main)
