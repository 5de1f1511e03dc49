"""download: bring a dataset's raw files, unchanged, into data/raw/<dataset>/.

Sources (the dataset's `source`, in params.yaml datasets.<dataset> or an experiment's own `dataset:`; left
out, a `path` means local, a `url` url and a `repo_id` hub):
- local: `path` is a file or folder on this machine (the embedded default: data/samples/<dataset>/).
- url:   `url` plus its `sha256`; a download whose bytes differ is refused, so the cache stays honest.
- hub:   a Hugging Face dataset repo pinned to a 40-character commit, optionally only `files` (globs); its
         listed sizes are counted against `max_bytes` and `max_files` before anything is downloaded.

A source that should move, a URL whose file is republished or a hub branch, says so with `follow: true`
(then a url needs no sha256 and a hub revision may be a branch). DVC cannot see such a source change, so the
retraining flow re-runs these downloads every time (flows/retrain.py); their bytes decide what goes stale.
A network failure exits with TRANSIENT_EXIT, which the Prefect flow retries; a wrong file fails at once.

Untrusted input is bounded: `extract: true` unpacks a downloaded archive (zip, tar, tar.gz/bz2/xz) refusing
members that leave the folder, links and device files (tunepipe/archives.py); `max_bytes` and `max_files` (default
20 GiB and 200,000) stop any source that is far larger than a dataset should be, and a local folder's symbolic
links may not point outside it.

dvc.yaml watches a local source's `path`; for url and hub sources the pin in params is what changes.
"""
from __future__ import annotations

from pathlib import Path

from tunepipe.archives import DEFAULT_LIMITS, Budget, unpack_in_place
from tunepipe.downloads import copy_local, fetch_hub, fetch_url
from tunepipe.errors import StageError
from tunepipe.files import atomic_dir, sha256_file
from tunepipe.settings import require
from tunepipe.sources import data_params
from tunepipe.stage import one_item, run_stage


def main(argv: list[str]) -> None:
    dataset = one_item(argv, "download")
    params, where = data_params(dataset)
    source = require(params, "source", where)
    limits = {key: params.get(key, default) for key, default in DEFAULT_LIMITS.items()}
    with atomic_dir(Path("data/raw") / dataset) as out:
        if source == "local":
            count = copy_local(Path(require(params, "path", where)), out, Budget(where, **limits))
        elif source == "url":
            pin = params.get("sha256") if params.get("follow") else require(params, "sha256", where)
            count = fetch_url(require(params, "url", where), pin, out, Budget(where, **limits))
        elif source == "hub":
            count = fetch_hub(params, where, out, Budget(where, **limits))
        else:
            raise StageError(f"{where}: source must be local, url or hub, got '{source}'")
        if params.get("extract"):
            count = unpack_in_place(out, Budget(f"{where} (unpacked)", **limits)) or count
        sizes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        print(f"[download] {dataset}: {count} files, {sizes / 1e6:.2f} MB -> data/raw/{dataset}")
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            print(f"  {path.relative_to(out)}  sha256 {sha256_file(path)[:16]}")


if __name__ == "__main__":
    run_stage(main)
