"""What a flow run publishes to the Prefect UI: the scores as one table, the report with its plots inside it,
and what changed since the previous run.

The UI cannot reach files in the repository, so the report's images travel inside the markdown as data URIs.
Tables follow the report's layout, one row per experiment and metric with before and after side by side,
instead of DVC's flattened keys.
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.dvc_cli import dvc

IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)")


def score_rows(repo: Path, profile: str = "") -> list[dict]:
    """One row per experiment and metric from the score stage's reports/metrics/<experiment>.json."""
    rows = []
    for path in sorted((repo / profile / "reports" / "metrics").glob("*.json")):
        scores = json.loads(path.read_text(encoding="utf-8"))
        after = scores.get("after") or {}
        for metric, value in after.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({"experiment": path.stem, "metric": metric, "before": (scores.get("before") or {}).get(metric),
                             "after": value, "gain": (scores.get("gain") or {}).get(metric), "rows": scores.get("rows")})
    return rows


def embed_images(markdown: str, base: Path) -> str:
    """Replace each `![alt](relative.png)` with the image itself as a data URI (a missing file stays a link)."""
    def inline(match: re.Match) -> str:
        image = base / match.group(2)
        if not image.is_file():
            return match.group(0)
        data = base64.b64encode(image.read_bytes()).decode("ascii")
        return f"![{match.group(1)}](data:image/png;base64,{data})"
    return IMAGE.sub(inline, markdown)


def metrics_diff_rows(repo: Path, against: str = "HEAD") -> list[dict]:
    """`dvc metrics diff <against>` (the previous run's committed metrics vs the workspace), one row per
    experiment (the metrics file's name) and metric."""
    result = dvc(str(repo), "metrics", "diff", against, "--all", "--json")
    rows = []
    for path, metrics in sorted((json.loads(result.stdout or "{}") or {}).items()):
        for metric, change in sorted(metrics.items()):
            rows.append({"experiment": Path(path).stem if "reports/metrics/" in path else path,
                         "metric": metric, "previous": change.get("old"), "now": change.get("new"),
                         "change": change.get("diff")})
    return rows


@task(cache_policy=NO_CACHE)
def publish_results(repo: str, profile: str = "") -> list[dict]:
    """The scores table and the report (images embedded) as artifacts of this flow run."""
    root = Path(repo)
    rows = score_rows(root, profile)
    if rows:
        create_table_artifact(key="scores", table=rows,
                              description="Each experiment's metrics before and after training, on the same test rows")
    report = root / profile / "reports" / "README.md"
    if report.exists():
        create_markdown_artifact(key="report", markdown=embed_images(report.read_text(encoding="utf-8"), report.parent),
                                 description=str(report.relative_to(root)))
    return rows


@task(cache_policy=NO_CACHE)
def publish_metrics_diff(repo: str, against: str = "HEAD") -> list[dict]:
    rows = metrics_diff_rows(Path(repo), against)
    changed = [row for row in rows if row["change"] not in (None, 0)]
    create_table_artifact(key="metrics-diff", table=rows or [{"experiment": "-", "metric": "no metrics", "previous": None,
                                                            "now": None, "change": None}],
                          description=f"`dvc metrics diff {against}`: {len(changed)} of {len(rows)} metrics changed")
    return rows
