"""What every benchmark section shares: real rows, child processes with their peak memory, the matmul rate.

A section is a function returning a dict: title, inputs (what was measured on: model, rows, lengths, steps,
threads), rows (the measurements), targets (name, ratio, goal, met) and notes. bench/run.py writes them all
to reports/bench.json and reports/bench.md.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SMOLLM2 = ROOT / "models/base/smollm2-135m"


def dialogsum_records(split: str, rows: int | None = None, seed: int = 0) -> tuple[list[dict[str, Any]], str]:
    """Converted DialogSum instruction records (the convert stage's own reader): the real release from
    ../shared/data when present, else the embedded samples; a seeded sample of `rows` of them."""
    from tunepipe.ledger import Ledger
    from tunepipe.formats.dialogsum import read

    real = SHARED / "dialogsum"
    source = real if real.exists() else ROOT / "data/samples/dialogsum"
    records = [r for r in read(source, {}, Ledger("bench")) if r["split"] == split]
    if rows is not None and rows < len(records):
        records = random.Random(seed).sample(records, rows)
    where = "real DialogSum" if source == real else "embedded DialogSum samples (no ../shared/data)"
    return records, f"{where} {split}"


class AnonSampler:
    """The peak of RssAnon (memory a process allocated, without the file pages it maps) sampled every 20 ms
    in a thread: VmHWM also counts the pages of a memory-mapped file being read, which is not memory held."""

    def __init__(self) -> None:
        import threading

        self.peak, self.running = 0, True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        while self.running:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]) * 1024)
            time.sleep(0.02)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.peak


def child(code: str, *args: str, cwd: Path | None = None, timeout: float = 1800) -> tuple[Any, float, int, int]:
    """Run `code` in a fresh Python; it sets `result` to a JSON value. Returns that value, the wall time, the
    child's own peak resident memory (VmHWM) and its peak allocated memory (RssAnon, sampled)."""
    wrapper = ("import json, runpy, sys\nfrom harness import AnonSampler, peak_rss\nsampler = AnonSampler()\n"
               "result = None\n" + code +
               "\nprint(json.dumps({'result': result, 'peak': peak_rss(), 'anon': sampler.stop()}))\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'bench'}", "TOKENIZERS_PARALLELISM": "true", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", wrapper, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    last = json.loads(done.stdout.strip().splitlines()[-1])
    return last["result"], seconds, last["peak"], last["anon"]


def peak_rss() -> int:
    """This process's own peak resident memory in bytes: VmHWM of its address space. Not ru_maxrss: Linux
    carries the parent's peak into a forked child's ru_maxrss, and the benchmark's parent holds models."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def matmul_rate(dtype: str, threads: int, size: int = 2048, seconds: float = 3.0,
                shape: tuple[int, int, int] | None = None) -> float:
    """Measured GFLOP/s of square matmuls (or of an m x k @ k x n `shape`) in `dtype` on `threads` threads:
    the machine's ceiling for the model FLOPs utilisation figures."""
    import torch

    torch.set_num_threads(threads)
    kind = getattr(torch, dtype)
    m, k, n = shape or (size, size, size)
    a, b = torch.randn(m, k).to(kind), torch.randn(k, n).to(kind)
    for _ in range(3):
        a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2 * m * k * n * count / (time.perf_counter() - started) / 1e9


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def target(name: str, value: float | None, goal: str, met: bool | None) -> dict[str, Any]:
    return {"name": name, "value": None if value is None else round(value, 3), "goal": goal, "met": met}


def gib(n: float) -> float:
    return round(n / 2**30, 3)
