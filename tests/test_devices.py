"""Where a run computes and in what precision, decided once and recorded: the GPU selection logic with
torch.cuda stood in for (no GPU here), and a real CPU run's recipe.json and checkpoint fingerprint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunepipe import checkpoints
from tunepipe import memory
from stages import tokenize as tokenize_stage
from stages import train as train_stage
from tunepipe.devices import device_description, one_process_one_gpu, resolved_precision
from tests.test_kinds import workspace
from tests.test_training import set_train


def gpu(monkeypatch, count: int = 1, native_bf16: bool = True, capability=(8, 0)):
    """torch.cuda as a machine with `count` GPUs shows it; bf16 is native (Ampere+) or only emulated."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    # a V100 or T4: is_bf16_supported() says True, counting emulation; only the native check says no
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native_bf16 or including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: f"Fake GPU {index}")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (((index or 0) + 1) * 10 ** 9, 80 * 10 ** 9))


def test_auto_precision_is_bf16_only_where_the_gpu_computes_it_natively(monkeypatch):
    from tunepipe import devices

    monkeypatch.setattr(devices, "cpu_computes_bf16", lambda: True)  # a CPU with AVX-512 BF16 or AMX
    assert resolved_precision("auto", "causal_lm", "lora") == "bf16"
    assert resolved_precision("auto", "causal_lm", "prompt_tuning") == "bf16"
    assert resolved_precision("auto", "sequence_head", "lora") == "fp32"  # a head's classifier trains: fp32
    assert resolved_precision("auto", "causal_lm", "full") == "fp32" and resolved_precision(None) == "fp32"
    monkeypatch.setattr(devices, "cpu_computes_bf16", lambda: False)  # it would be emulated, slower
    assert resolved_precision("auto", "causal_lm", "lora") == "fp32"
    gpu(monkeypatch, native_bf16=True)
    assert resolved_precision("auto") == "bf16" == resolved_precision("auto", "sequence_head", "full")
    gpu(monkeypatch, native_bf16=False, capability=(7, 0))  # emulated bf16 would be slower than fp16
    assert resolved_precision("auto") == "fp16"
    assert resolved_precision("bf16") == "bf16"  # asked for, it is what it is


def test_the_memory_check_reads_this_process_s_own_gpu(monkeypatch):
    gpu(monkeypatch, count=2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: ({0: 5, 1: 9}[index], 100))
    monkeypatch.setenv("LOCAL_RANK", "1")  # the second process under accelerate
    assert memory.free_bytes("cuda") == 9
    monkeypatch.delenv("LOCAL_RANK")
    assert memory.free_bytes("cuda") == 5
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert device_description() == "cuda:1 Fake GPU 1 (compute capability 8.0)"


@pytest.mark.parametrize("count, visible, processes, rank, after", [
    (4, None, 1, None, "0"),        # one process, four GPUs: only the first, or the Trainer wraps DataParallel
    (4, "2,3", 1, None, "2"),       # the first of those the user made visible
    (1, None, 1, None, "0"),        # one GPU: the narrowing changes nothing
    (0, None, 1, None, "0"),        # none at all: harmless
    (2, "", 1, None, ""),           # every GPU hidden on purpose: stays hidden
    (4, None, 2, None, None),       # two processes: accelerate gives each its own
    (4, "0,1,2,3", 1, "0", "0,1,2,3"),  # already a launched process
])
def test_one_process_sees_one_gpu(monkeypatch, count, visible, processes, rank, after):
    gpu(monkeypatch, count=count)
    for name, value in (("CUDA_VISIBLE_DEVICES", visible), ("LOCAL_RANK", rank)):
        monkeypatch.delenv(name, raising=False) if value is None else monkeypatch.setenv(name, value)
    one_process_one_gpu(processes)
    import os

    assert os.environ.get("CUDA_VISIBLE_DEVICES") == after


def test_narrowing_to_one_gpu_asks_cuda_nothing(monkeypatch):
    """Counting devices can start CUDA (where NVML is absent), after which CUDA_VISIBLE_DEVICES is ignored."""
    import os

    def starts_cuda(*args, **kwargs):
        raise AssertionError("CUDA asked before the visible devices were narrowed")

    for name in ("device_count", "is_available", "init", "_lazy_init"):
        monkeypatch.setattr(torch.cuda, name, starts_cuda)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    one_process_one_gpu(1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_precision_and_device_are_in_the_recipe_and_the_checkpoint_fingerprint(tmp_path, monkeypatch, precision):
    monkeypatch.chdir(tmp_path)
    name = workspace(tmp_path, "llama", "causal_lm", "lora")
    set_train(tmp_path, max_steps=4, checkpoint_steps=2, eval_steps=2, precision=precision)
    tokenize_stage.main([name])
    kept = []
    monkeypatch.setattr(checkpoints, "remove", lambda folder: kept.append(folder))  # keep them to read
    model = train_stage.main([name])
    recipe = json.loads(Path(f"models/trained/{name}/recipe.json").read_text())
    assert (recipe["precision"], recipe["device"]) == (precision, "cpu")
    fingerprint = json.loads(Path(f"checkpoints/{name}/fingerprint.json").read_text())
    assert (fingerprint["precision"], fingerprint["device"]) == (precision, "cpu")
    # bf16 on a CPU: the frozen base is stored in bf16 (still so after the evaluations, which cast it up to
    # fp32 and back), the adapter trains in fp32
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16 if precision == "bf16" else torch.float32}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    # checkpoints made in another precision are refused, naming it
    with pytest.raises(Exception, match="made from other precision; delete checkpoints/toy"):
        other = "fp32" if precision == "bf16" else "bf16"
        checkpoints.resume_from(Path(f"checkpoints/{name}"), {**fingerprint, "precision": other}, "train")


def test_training_on_a_gpu_asks_for_deterministic_algorithms(monkeypatch):
    """Byte-identical re-training is claimed: on CUDA that needs deterministic kernels and cuBLAS's fixed
    workspace, set before CUDA's first use; on a CPU nothing changes."""
    import os

    from tunepipe.devices import deterministic_cuda

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU machine, even where the tests run on a GPU one
    assert not deterministic_cuda() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ  # this CPU machine
    asked = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda mode, warn_only=False: asked.append(mode))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # (patched back when the test ends)
    assert deterministic_cuda()
    assert asked == [True] and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark


@pytest.mark.parametrize("native_bf16, half", [(True, "bfloat16"), (False, "float16")])
def test_each_stage_loads_a_half_precision_base_where_a_gpu_computes_in_it(monkeypatch, native_bf16, half):
    """train stores a language model adapter's frozen base in the GPU's half precision (heads, full
    fine-tuning and QLoRA's 4-bit base as before); predict and merge load language models in it too. On a CPU
    nothing changes but bf16 storage for a language model's adapter where the CPU computes in bf16."""
    from tunepipe.devices import frozen_dtype, inference_dtype, qlora_compute_dtype
    from tunepipe.kinds import KINDS, MERGEABLE

    gpu(monkeypatch, native_bf16=native_bf16)
    precision = resolved_precision("auto")
    for kind, spec in KINDS.items():
        language_model = kind in ("causal_lm", "seq2seq")
        for method in spec.methods:
            adapter = language_model and method in ("lora", "prompt_tuning")
            assert frozen_dtype(precision, True, kind, method) == (half if adapter else "float32"), (kind, method)
            loads = half if language_model and method != "qlora" else "float32"
            assert inference_dtype(None, kind, method) == loads, (kind, method)  # predict
            if method in MERGEABLE:
                assert inference_dtype("auto", kind, method) == loads, (kind, method)  # merge
            assert inference_dtype("float32", kind, method) == "float32"  # a stated dtype is kept
    assert qlora_compute_dtype("auto") == half and qlora_compute_dtype("float32") == "float32"  # QLoRA's 4-bit base
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert qlora_compute_dtype("auto") == "float32"
    assert frozen_dtype("bf16", False, "causal_lm", "lora") == "bfloat16"
    assert frozen_dtype("fp16", False, "causal_lm", "lora") == "float32"  # no fp16 storage on a CPU
    assert frozen_dtype("bf16", False, "sequence_head", "lora") == "float32"
    assert {inference_dtype(None, kind, "lora") for kind in KINDS} == {"float32"}
