"""A Hugging Face Hub of our own on localhost: the real huggingface_hub client (snapshot_download, the way the
download and fetch_model stages call it) fetches a repository's files from it over HTTP, pinned to a commit.

It answers the routes that client uses: the tree listing (/api/<type>s/<repo>/tree/<revision>), the revision
info (/api/<type>s/<repo>/revision/<revision>) and file downloads (/<type>s/<repo>/resolve/<revision>/<path>,
HEAD and GET, with the commit and ETag headers the client checks). Every request's Authorization header is
kept, so a test can see that a token was sent, and where it went."""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import unquote, urlparse

ROUTE = re.compile(r"^/(?:api/)?(?P<type>datasets|models)?/?(?P<repo>[^/]+/[^/]+)/(?P<kind>tree|revision|resolve)/"
                   r"(?P<revision>[^/?]+)/?(?P<path>[^?]*)")


class Hub:
    def __init__(self, repos: dict[tuple[str, str], dict[str, bytes]], revision: str):
        self.repos, self.revision = repos, revision
        self.authorizations: list[str | None] = []
        self.requests: list[str] = []

    def handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def answer(self, head: bool = False):
                hub.authorizations.append(self.headers.get("Authorization"))
                hub.requests.append(f"{self.command} {self.path}")
                path = urlparse(self.path).path
                match = ROUTE.match(unquote(path))
                if not match:
                    return self.reply(404, b'{"error": "not found"}', {"X-Error-Code": "EntryNotFound"}, head)
                repo_type = "dataset" if match["type"] == "datasets" else "model"
                files = hub.repos.get((repo_type, match["repo"]))
                if files is None:
                    return self.reply(404, b'{"error": "Repository not found"}',
                                      {"X-Error-Code": "RepoNotFound"}, head)
                if match["revision"] != hub.revision:
                    return self.reply(404, b'{"error": "Invalid rev id"}', {"X-Error-Code": "RevisionNotFound"}, head)
                if match["kind"] == "tree":
                    listing = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                               for name, data in sorted(files.items())]
                    return self.reply(200, json.dumps(listing).encode(), {"Content-Type": "application/json"}, head)
                if match["kind"] == "revision":
                    info = {"id": match["repo"], "sha": hub.revision, "siblings": [{"rfilename": n} for n in files]}
                    return self.reply(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head)
                data = files.get(match["path"])
                if data is None:
                    return self.reply(404, b'{"error": "Entry not found"}', {"X-Error-Code": "EntryNotFound"}, head)
                return self.reply(200, data, {"X-Repo-Commit": hub.revision, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                                              "Content-Type": "application/octet-stream"}, head)

            def do_GET(self):
                self.answer()

            def do_HEAD(self):
                self.answer(head=True)

        return Handler


@contextlib.contextmanager
def serve_hub(repos: dict[tuple[str, str], dict[str, bytes]], revision: str) -> Iterator[tuple[str, Hub]]:
    """(endpoint URL for HF_ENDPOINT, the hub) while it serves `repos`: {(type, "owner/name"): {path: bytes}}."""
    hub = Hub(repos, revision)
    server = ThreadingHTTPServer(("127.0.0.1", 0), hub.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hub
    finally:
        server.shutdown()
        server.server_close()
