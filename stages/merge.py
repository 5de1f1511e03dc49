"""merge: fold a LoRA or QLoRA adapter into its base model -> models/merged/<experiment>/ (safetensors).

A merged model serves like any plain model (no peft at inference, no adapter overhead per layer), and is
what a user ships. A QLoRA adapter is folded into its base de-quantized to float, never into 4-bit
weights. The merge checks itself: on fixed inputs the merged model's logits must equal the adapter
model's within `tolerance`, or the stage fails saying by how much they differ; the result is saved as
merge_check.json beside the weights. Exists only for experiments listed in params.yaml `merge`.
"""
from __future__ import annotations

from pathlib import Path

from stages.common import (
    StageError,
    atomic_dir,
    load_experiment,
    load_params,
    one_item,
    pin_threads,
    run_stage,
    write_json,
)
from stages.modeling import MERGEABLE, read_recipe

CHECK_TEXTS = ["The quick brown fox jumps over the lazy dog.", "长江是中国最长的河流。", "Summarize: #Person1#: Hi."]


def logits(model, tokenizer, texts: list[str]):
    """Logits of each text alone (no padding, so the tokenizer needs no pad token), concatenated."""
    import torch

    outputs = []
    for text in texts:
        inputs = tokenizer(text, return_tensors="pt", return_token_type_ids=False).to(model.device)
        extra = {}
        if getattr(model.config, "is_encoder_decoder", False):
            extra["decoder_input_ids"] = torch.tensor([[model.config.decoder_start_token_id]], device=model.device)
        with torch.no_grad():
            outputs.append(model(**inputs, **extra).logits.float().flatten())
    return torch.cat(outputs)


def main(argv: list[str]) -> None:
    experiment = one_item(argv, "merge")
    setup = load_experiment(experiment)
    params = load_params("merge", experiment, required=("tolerance",))
    where = f"params.yaml merge.{experiment}"
    if setup["method"] not in MERGEABLE:
        raise StageError(f"{where}: method '{setup['method']}' has no low-rank update to merge "
                         f"(merge applies to {', '.join(MERGEABLE)}); remove this entry")
    from transformers import AutoTokenizer

    from stages.modeling import load_trained

    pin_threads(params.get("threads", 2))
    base = Path("models/base") / setup["model"]
    trained = Path("models/trained") / experiment
    read_recipe(trained)
    tokenizer = AutoTokenizer.from_pretrained(base)
    # dtype: a 7B model merges in float16 in half the memory of float32 (set its tolerance to match)
    adapter_model = load_trained(base, trained, dequantize=True, dtype=params.get("dtype", "float32"))
    expected = logits(adapter_model, tokenizer, CHECK_TEXTS)
    merged = adapter_model.merge_and_unload()
    difference = float((logits(merged, tokenizer, CHECK_TEXTS) - expected).abs().max())
    check = {"max_abs_logit_difference": difference, "tolerance": float(params["tolerance"]),
             "inputs": len(CHECK_TEXTS), "passed": difference <= float(params["tolerance"])}
    if not check["passed"]:
        raise StageError(f"merge of {trained} changed the model: logits differ by up to {difference:.3g} "
                         f"from the adapter's (tolerance {params['tolerance']})")
    with atomic_dir(Path("models/merged") / experiment) as out:
        merged.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        write_json(out / "merge_check.json", check)
    print(f"[merge] {trained} + {base} -> models/merged/{experiment} (logits within {difference:.2g})")


if __name__ == "__main__":
    run_stage(main)
