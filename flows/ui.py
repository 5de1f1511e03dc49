"""The Prefect UI, locally and offline.

    make ui                                    # the Prefect server and UI on http://127.0.0.1:4200, analytics off
    make screenshot                            # = python -m flows.ui screenshot [--flow-run ID] [--out PNG]

`screenshot` photographs a flow run of the server at PREFECT_API_URL (default: the newest run of the pipeline
flow) in headless Chromium from Debian's packages (`apt-get install chromium`), driven by Playwright (the `ui`
extra) to open the run's Task Runs tab: one row per stage with its state. The run's scores artifact goes
beside it (<out>-scores.png).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]  # no background connections: the network may be closed


def ui_base(api_url: str) -> str:
    return api_url.rstrip("/").removesuffix("/api")


def newest_run(flow_name: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                     sort=FlowRunSort.START_TIME_DESC, limit=1)
    if not runs:
        sys.exit(f"error: no run of flow '{flow_name}' on this server: run `python -m flows.pipeline run` first")
    return runs[0]


def artifact_id(flow_run_id, key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return found[0].id if found else None


def photograph(url: str, out: Path, tab: str | None = None, size: tuple[int, int] = (1600, 1300)) -> None:
    """Open `url` in headless Chromium, click `tab` if given, and save a PNG once the page has settled."""
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser_path:
        sys.exit("error: no chromium on PATH: install Debian's package (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": size[0], "height": size[1]})
        page.goto(url, wait_until="networkidle")
        if tab:
            page.get_by_text(tab, exact=True).first.click()
            page.wait_for_load_state("networkidle")
        page.wait_for_timeout(1500)  # the run graph draws after the data arrives
        page.screenshot(path=str(out))
        browser.close()
    print(f"{url}{f' ({tab})' if tab else ''} -> {out}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.ui", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    shot = commands.add_parser("screenshot", help="photograph a flow run and its scores artifact in the UI")
    shot.add_argument("--flow-run", help="flow run id (default: the newest run of the pipeline flow)")
    shot.add_argument("--flow", default="tunepipe-pipeline", help="flow whose newest run to show")
    shot.add_argument("--out", type=Path, default=Path("reports/prefect-ui.png"))
    args = parser.parse_args()
    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        sys.exit("error: PREFECT_API_URL is not set: start the server (make ui) and export "
                 "PREFECT_API_URL=http://127.0.0.1:4200/api")
    run_id = args.flow_run or newest_run(args.flow).id
    photograph(f"{ui_base(api_url)}/runs/flow-run/{run_id}", args.out, tab="Task Runs")
    scores = artifact_id(run_id, "scores")
    if scores:
        photograph(f"{ui_base(api_url)}/artifacts/artifact/{scores}", args.out.with_name(f"{args.out.stem}-scores.png"))


if __name__ == "__main__":
    main()
