"""Bringing a dataset's raw files, unchanged: from a local path, a pinned URL, or a Hugging Face dataset repo.

Untrusted input is bounded (tunepipe/archives.py: `max_bytes`, `max_files`, archive members that leave the
folder); a local folder's symbolic links may not point outside it. A network failure is a TransientError,
which the Prefect flow retries; a wrong file fails at once.
"""
from __future__ import annotations

import hashlib
import http.client
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tunepipe.archives import Budget
from tunepipe.errors import StageError, TransientError
from tunepipe.hub import COMMIT, require_hub
from tunepipe.settings import require

OFFLINE_HINT = ("To work offline, give the dataset a `path:` to a folder or file holding the raw files "
                "(source: local).")


def copy_local(source: Path, out: Path, budget: Budget) -> int:
    if not source.exists():
        raise StageError(f"local source {source} does not exist")
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    files = [p for p in files if not p.name.startswith(".")]
    if not files:
        raise StageError(f"local source {source} holds no files")
    root = source.resolve() if source.is_dir() else source.resolve().parent
    for path in files:
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise StageError(f"local source {source}: {path.relative_to(source)} is a link to {path.resolve()}, "
                             "outside the source folder; copy the file in instead")
        budget.add_file(str(path))
        budget.add_bytes(path.stat().st_size, str(path))
    for path in files:
        target = out / (path.name if source.is_file() else path.relative_to(source))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)  # bytes only: mtimes and modes must not leak into the output
    return len(files)


def fetch_url(url: str, sha256: str | None, out: Path, budget: Budget) -> int:
    """Download `url` into `out`; with a sha256 pin, refuse other bytes (sha256 None: a followed source). A cut
    connection raises, and atomic_dir then leaves no output: an interrupted download never looks complete."""
    target = out / Path(url.split("?")[0]).name
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(target, "wb") as handle:
            budget.add_file(url)
            declared = int(response.headers.get("Content-Length") or 0)
            budget.check_declared(declared, url)  # before reading
            received = 0
            for block in iter(lambda: response.read(1 << 20), b""):
                budget.add_bytes(len(block), url)
                received += len(block)
                digest.update(block)
                handle.write(block)
            if declared and received < declared:  # read(n) ends quietly when the server hangs up early
                raise TransientError(f"cannot download {url}: the connection closed after {received} of "
                                     f"{declared} bytes. {OFFLINE_HINT}")
    except urllib.error.HTTPError as err:  # the server answered: only overload and its own errors may pass
        error = TransientError if err.code in (408, 429) or err.code >= 500 else StageError
        raise error(f"cannot download {url} (HTTP {err.code} {err.reason}). {OFFLINE_HINT}") from None
    except ValueError as err:  # not a URL urllib can open
        raise StageError(f"cannot download {url} ({err})") from None
    except (OSError, http.client.HTTPException) as err:  # timeout, refused or dropped connection, cut-off body
        raise TransientError(f"cannot download {url} ({type(err).__name__}: {err}). {OFFLINE_HINT}") from None
    if sha256 is not None and digest.hexdigest() != sha256.lower():
        raise StageError(f"{url}: sha256 is {digest.hexdigest()}, the dataset's pin is {sha256}: refusing changed data")
    return 1


def fetch_hub(params: dict[str, Any], where: str, out: Path, budget: Budget) -> int:
    """A hub dataset at its pinned revision (only `files`, if given), its listed sizes counted against the
    budget before a byte is downloaded."""
    repo_id = require(params, "repo_id", where)
    revision = str(require(params, "revision", where))
    if not COMMIT.match(revision) and not params.get("follow"):
        raise StageError(f"{where}: revision must be a 40-character commit hash, got '{revision}' "
                         "(or set follow: true to track a branch)")
    require_hub(f"dataset '{repo_id}'", OFFLINE_HINT)
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import filter_repo_objects

    try:
        listing = HfApi().list_repo_tree(repo_id, repo_type="dataset", revision=revision, recursive=True)
        files = [entry for entry in listing if getattr(entry, "size", None) is not None]  # folders have none
        for entry in filter_repo_objects(files, allow_patterns=params.get("files"), key=lambda e: e.path):
            budget.add_file(entry.path)
            budget.add_bytes(entry.size, entry.path)
        snapshot_download(repo_id, repo_type="dataset", revision=revision, local_dir=out,
                          allow_patterns=params.get("files"))
    except StageError:
        raise
    except Exception as err:  # a repo, revision or file that is not there is final; the rest may pass
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

        missing = isinstance(err, (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError))
        raise (StageError if missing else TransientError)(
            f"cannot fetch dataset '{repo_id}@{revision}' ({type(err).__name__}). {OFFLINE_HINT}") from None
    shutil.rmtree(out / ".cache", ignore_errors=True)  # the hub client's bookkeeping, not data
    return sum(1 for p in out.rglob("*") if p.is_file())
