"""The Hugging Face Hub as a source: revisions pinned to a commit, and a fast, clear failure when it is out of reach."""
from __future__ import annotations

import os
import re

from tunepipe.errors import StageError

COMMIT = re.compile(r"^[0-9a-f]{40}$")  # a hub revision pinned to one commit


def require_hub(what: str, offline_hint: str) -> None:
    """Fail in seconds with one line when the Hugging Face Hub cannot be reached.

    The hub client itself retries with back-off for ~25 s and logs each retry; checking the endpoint first
    gives the user one clear line instead. Timeouts are short because a reachable hub answers at once.
    """
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}:
        raise StageError(f"cannot fetch {what}: HF_HUB_OFFLINE is set. {offline_hint}")
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as err:
        raise StageError(f"cannot reach {host}:{port} to fetch {what} ({err.strerror or err}). {offline_hint}") from None
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
