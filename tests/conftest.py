"""Shared test fixtures. Real public datasets live in ../shared/data beside the checkout (never in it)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TUNEPIPE_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def shared_file(relative: str) -> Path:
    """A file of ../shared/data, or skip the test cleanly when this machine does not have it."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path


def copy_project(dest: Path, profiles: bool = False) -> Path:
    """The project's own files (tracked or not ignored) copied into `dest`: no outputs of a run in the
    developer's checkout, so a test's pipeline starts cold. Without `profiles`, the other profiles' pipelines
    (profiles/*/dvc.yaml) stay out: a test of the default runs against the default alone."""
    import re

    import shutil
    import subprocess

    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split("\n")
    for name in filter(None, listed):
        source = REPO / name
        generated = name.startswith(("data/", "models/", "reports/", "dvc.lock")) and not name.startswith("data/samples/")
        generated |= bool(re.match(r"profiles/[^/]+/(data|models|reports)/|profiles/[^/]+/dvc\.lock$", name))
        generated |= not profiles and bool(re.match(r"profiles/[^/]+/dvc\.yaml$", name))
        if source.is_file() and not generated:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest / name)
    return dest


BAD_INPUTS = REPO / "tests" / "bad_inputs"


def bad_input(case: str, tmp_path: Path) -> Path:
    """A copy of tests/bad_inputs/<format>/<case>/ without expect.json (readers of *.json would read it)."""
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(BAD_INPUTS / case, raw, ignore=shutil.ignore_patterns("expect.json"))
    return raw


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real Prefect server (API and UI) on a free localhost port, once per test session, with API auth on:
    this process's flows and any worker started from it get the URL and the credentials from the environment,
    the way a team's workers would. Yields (api_url, auth_string)."""
    import secrets
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    auth = f"team:{secrets.token_hex(8)}"
    home = tmp_path_factory.mktemp("prefect-home")
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_AUTH_STRING": auth,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": ""}
    log = open(home / "server.log", "w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"prefect server exited: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        server.kill()
        raise RuntimeError(f"prefect server did not answer in 120 s: {(home / 'server.log').read_text()[-2000:]}")
    saved = {key: os.environ.get(key) for key in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_HOME")}
    os.environ.update({"PREFECT_API_URL": url, "PREFECT_API_AUTH_STRING": auth, "PREFECT_HOME": str(home)})
    try:
        with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_API_AUTH_STRING: auth}):
            yield url, auth
            drain_prefect_workers()  # else the log and event workers retry the stopped server for a minute at exit
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def drain_prefect_workers() -> None:
    """Send the logs and events this process still holds, as prefect's own test harness does before it stops."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        try:
            pending = APILogWorker.instance().drain()
            if inspect.isawaitable(pending):
                await pending
        except RuntimeError:  # never started
            pass
        pending = EventsWorker.drain_all()
        if inspect.isawaitable(pending):
            await pending

    run_coro_as_sync(drain())
