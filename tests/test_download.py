"""The download stage against a real HTTP server on localhost and real archives: transient failures exit 75
(the flow retries them), wrong bytes and bad archives fail at once with one line, nothing partial is ever
left where a complete download would be, and size and file-count limits hold."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tunepipe.errors import StageError
import yaml

BODY = b"id\ttext\n1\thello\n"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the stdlib's name
        if self.path == "/data.tsv":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/cut.tsv":  # announces 1 MB, sends 10 bytes, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            self.wfile.write(BODY[:10])
        elif self.path == "/huge.bin":  # announces 50 GB
            self.send_response(200)
            self.send_header("Content-Length", str(50 << 30))
            self.end_headers()
        else:
            self.send_error(int(self.path.strip("/").split(".")[0]) if self.path[1:4].isdigit() else 404)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def download(tmp_path: Path, entry: dict) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"datasets": {"ds": entry}}))
    repo = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", "stages.download", "ds"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(repo)}, timeout=120)


def assert_fails(result: subprocess.CompletedProcess, status: int, message: str, tmp_path: Path) -> None:
    assert result.returncode == status, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    raw = tmp_path / "data" / "raw"
    assert not (raw / "ds").exists() and not list(raw.glob(".*")), "a partial download was left behind"


def url(server: str, path: str, **extra) -> dict:
    return {"source": "url", "url": f"{server}{path}", "sha256": hashlib.sha256(BODY).hexdigest(), **extra}


def test_a_pinned_url_downloads_its_exact_bytes(server, tmp_path):
    result = download(tmp_path, url(server, "/data.tsv"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data/raw/ds/data.tsv").read_bytes() == BODY


@pytest.mark.parametrize("path, status, message", [
    ("/503.tsv", 75, "HTTP 503"),          # the server is overloaded: a later try may pass
    ("/429.tsv", 75, "HTTP 429"),
    ("/cut.tsv", 75, "closed after 10 of 1048576 bytes"),  # the connection dropped mid-file
    ("/404.tsv", 2, "HTTP 404"),           # not there: retrying cannot help
    ("/huge.bin", 2, "max_bytes"),         # announced far above the limit: refused before reading
])
def test_failed_downloads_say_why_and_leave_nothing(server, tmp_path, path, status, message):
    assert_fails(download(tmp_path, url(server, path)), status, message, tmp_path)


def test_bytes_that_differ_from_the_pin_are_refused(server, tmp_path):
    result = download(tmp_path, url(server, "/data.tsv", sha256="0" * 64))
    assert_fails(result, 2, f"sha256 is {hashlib.sha256(BODY).hexdigest()}, the dataset's pin is", tmp_path)


def test_an_unpinned_url_needs_follow(server, tmp_path):
    entry = {"source": "url", "url": f"{server}/data.tsv"}
    assert_fails(download(tmp_path, entry), 2, "missing required key 'sha256'", tmp_path)
    assert download(tmp_path, {**entry, "follow": True}).returncode == 0


def test_a_connection_refused_is_transient(tmp_path):
    assert_fails(download(tmp_path, {"source": "url", "url": "http://127.0.0.1:9/x.tsv", "sha256": "0" * 64}),
                 75, "cannot download", tmp_path)


def test_a_hub_dataset_past_max_bytes_is_refused_before_a_byte_is_downloaded(tmp_path, monkeypatch):
    """The hub's listed sizes count against the budget first: the files themselves are never requested."""
    from tests.hub_server import serve_hub

    revision = "a" * 40
    files = {"data/train.jsonl": b"x" * 2000, "data/test.jsonl": b"y" * 10, "README.md": b"# ds\n"}
    entry = {"source": "hub", "repo_id": "someone/big", "revision": revision, "max_bytes": 1500}
    with serve_hub({("dataset", "someone/big"): files}, revision) as (endpoint, hub):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        assert_fails(download(tmp_path, entry), 2, "more than max_bytes=1500 bytes", tmp_path)
        assert hub.requests and not [r for r in hub.requests if "/resolve/" in r]
        # the files a dataset takes are what counts: the small ones alone fit
        result = download(tmp_path, {**entry, "files": ["data/test.jsonl", "README.md"]})
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "data/raw/ds/data/test.jsonl").read_bytes() == b"y" * 10


def tar_with(tmp_path: Path, add) -> Path:
    archive = tmp_path / "src" / "data.tar.gz"
    archive.parent.mkdir(exist_ok=True)
    with tarfile.open(archive, "w:gz") as bundle:
        add(bundle)
    return archive


def add_file(bundle: tarfile.TarFile, name: str, data: bytes = b"x\n") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    bundle.addfile(info, io.BytesIO(data))


def add_special(bundle: tarfile.TarFile, name: str, kind: bytes, target: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    bundle.addfile(info)


def zip_with(tmp_path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    archive = tmp_path / "src" / "data.zip"
    archive.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            bundle.writestr(info, "/etc/passwd")
    return archive


def not_an_archive(tmp_path: Path) -> Path:
    fake = tmp_path / "src" / "data.zip"
    fake.parent.mkdir()
    fake.write_bytes(b"this is not a zip file")
    return fake


def local_archive(archive: Path, **extra) -> dict:
    return {"source": "local", "path": str(archive), "extract": True, **extra}


def test_a_good_archive_unpacks_into_the_raw_folder(tmp_path):
    archive = tar_with(tmp_path, lambda b: (add_file(b, "release/train.tsv", BODY), add_file(b, "release/test.tsv")))
    result = download(tmp_path, local_archive(archive))
    assert result.returncode == 0, result.stderr
    raw = tmp_path / "data/raw/ds"
    assert sorted(str(p.relative_to(raw)) for p in raw.rglob("*") if p.is_file()) == [
        "release/test.tsv", "release/train.tsv"]
    assert (raw / "release/train.tsv").read_bytes() == BODY


@pytest.mark.parametrize("case, build, message", [
    ("parent path", lambda t: tar_with(t, lambda b: add_file(b, "../escape.txt")), "points outside"),
    ("absolute path", lambda t: tar_with(t, lambda b: add_file(b, "/tmp/escape.txt")), "points outside"),
    ("nested climb", lambda t: tar_with(t, lambda b: add_file(b, "a/../../escape.txt")), "points outside"),
    ("symlink out", lambda t: tar_with(t, lambda b: add_special(b, "link", tarfile.SYMTYPE, "/etc/passwd")),
     "is a link"),
    ("hard link", lambda t: tar_with(t, lambda b: add_special(b, "hard", tarfile.LNKTYPE, "/etc/passwd")),
     "is a link"),
    ("device", lambda t: tar_with(t, lambda b: add_special(b, "fifo", tarfile.FIFOTYPE)), "special file"),
    ("zip climb", lambda t: zip_with(t, {"../escape.txt": b"x"}), "points outside"),
    ("zip absolute", lambda t: zip_with(t, {"/tmp/escape.txt": b"x"}), "points outside"),
    ("zip symlink", lambda t: zip_with(t, {"ok.txt": b"x"}, symlink="link"), "symbolic link"),
    ("not an archive", lambda t: not_an_archive(t), "not a readable archive"),
])
def test_unsafe_archives_are_refused_before_anything_is_written(tmp_path, case, build, message):
    archive = build(tmp_path)
    assert_fails(download(tmp_path, local_archive(archive)), 2, message, tmp_path)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_an_unsafe_member_after_good_ones_refuses_the_archive_before_any_is_written(tmp_path, kind):
    """Every member is checked before the first is written: a good one first, then one whose absolute path
    points at a real place outside; nothing lands in the target folder and nothing at that place."""
    from tunepipe.archives import Budget, extract

    escape = tmp_path / f"escaped-{kind}.txt"
    if kind == "tar":
        archive = tar_with(tmp_path, lambda b: (add_file(b, "good/first.txt", BODY), add_file(b, str(escape), BODY)))
    else:
        archive = zip_with(tmp_path, {"good/first.txt": BODY, str(escape): BODY})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(StageError, match="points outside the target folder"):
        extract(archive, out, Budget("test", max_bytes=1 << 30, max_files=100))
    assert list(out.rglob("*")) == [] and not escape.exists()


def test_archive_limits_stop_a_bomb_and_a_flood(tmp_path):
    bomb = zip_with(tmp_path, {"zeros.bin": bytes(5 << 20)})  # 5 MB of zeros: a few KB compressed
    assert bomb.stat().st_size < 50_000
    assert_fails(download(tmp_path, local_archive(bomb, max_bytes=1 << 20)), 2, "max_bytes=1048576", tmp_path)
    flood = tar_with(tmp_path, lambda b: [add_file(b, f"f{i}.txt") for i in range(20)])
    assert_fails(download(tmp_path, local_archive(flood, max_files=10)), 2, "max_files=10", tmp_path)


def test_a_local_folder_may_not_link_outside_itself(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "rows.tsv").write_bytes(BODY)
    (folder / "inside.tsv").symlink_to(folder / "rows.tsv")
    assert download(tmp_path, {"source": "local", "path": str(folder)}).returncode == 0
    secret = tmp_path / "secret.txt"
    secret.write_text("not data")
    (folder / "leak.tsv").symlink_to(secret)
    work = tmp_path / "again"
    work.mkdir()
    assert_fails(download(work, {"source": "local", "path": str(folder)}), 2, "outside the source folder", work)


def test_a_local_source_changed_in_place_is_noticed(tmp_path):
    """DVC hashes a local source (dvc.yaml lists `path` as a dependency): an edit in place makes download stale."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(command, cwd=tmp_path, check=True, env=env)
    (tmp_path / "src").mkdir()
    (tmp_path / "src/rows.tsv").write_bytes(BODY)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"datasets": {"ds": {"source": "local", "path": "src"}}}))
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["download"]  # the project's own stage
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"download": {
        "foreach": {"ds": {"file": "params.yaml", "key": "datasets.ds", "path": "src"}},
        "do": {**stages["do"], "deps": ["${item.path}"]}}}}))
    run = subprocess.run(["dvc", "repro"], cwd=tmp_path, env={**env, "PYTHONPATH": str(repo)}, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(subprocess.run(["dvc", "status", "--json"], cwd=tmp_path, env=env, capture_output=True,
                                     text=True).stdout) == {}
    with open(tmp_path / "src/rows.tsv", "ab") as handle:
        handle.write(b"2\tagain\n")
    status = json.loads(subprocess.run(["dvc", "status", "--json"], cwd=tmp_path, env=env, capture_output=True,
                                       text=True).stdout)
    assert status == {"download@ds": [{"changed deps": {"src": "modified"}}]}
