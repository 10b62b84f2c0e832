"""The A/B comparison as a tab of the DAG run page: table, intervals, verdicts, comparison chart, trend chart.

Why a view: the run's note (dag/run_note.py) is markdown limited to 1,000
characters, and Airflow 3.3's UI renders it without images. An Airflow 3 plugin
can add a FastAPI app to the API server and an *external view* with destination
``dag_run``: the UI shows it as a tab of every DAG run page, in an iframe whose
address has ``{DAG_ID}`` and ``{RUN_ID}`` filled in. `SmakerPlugin` (run_note.py)
registers both.

The page finds its files through the compare task's XCom (``files``: the paths
the task wrote), never through a path from the request, and it asks Airflow's auth
manager whether the user may read the DAG's runs (the UI's session cookie
authenticates the iframe's requests), as Airflow's own endpoints do.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from smaker_airflow.run.comparison import VIEW_PREFIX, VIEW_ROUTE

COMPARE_TASK = "compare"  # dag/production.py's task id (not imported: every Airflow process loads this module)
URL_PREFIX = VIEW_PREFIX  # where the FastAPI app is mounted on the API server
IMAGES = ("chart", "trend")  # keys of the compare summary's "files" that the page shows
VIEW = {
    "name": "A/B comparison",
    "href": "smaker/runs/{DAG_ID}/{RUN_ID}",  # relative to the UI's base URL
    "destination": "dag_run",
    "url_route": VIEW_ROUTE,
}


def compare_summary(dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The compare task's XCom ``return_value`` of a run (run/comparison.py's summary), or None."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=run_id, dag_ids=dag_id, task_ids=COMPARE_TASK, key="return_value")
        ).first()
        value = XComModel.deserialize_value(row) if row is not None else None
    return value if isinstance(value, dict) else None


def page_html(dag_id: str, run_id: str, summary: dict[str, Any] | None) -> str:
    """The tab's page: the comparison markdown (tables, verdicts) rendered, then the charts."""
    from markdown_it import MarkdownIt

    title = f"A/B comparison of {html.escape(dag_id)}, run {html.escape(run_id)}"
    if summary is None:
        body = "<p>No comparison for this run (yet): the <code>compare</code> task has not written one.</p>"
    else:
        body = MarkdownIt("commonmark", {"html": False}).enable("table").render(str(summary.get("table", "")))
        files = summary.get("files", {})
        base = html.escape(quote(run_id, safe=""), quote=True)  # relative to the page: .../runs/<dag>/<run>
        for name in IMAGES:
            if files.get(name):
                body += f'<p><img alt="{name}" src="{base}/{name}.png" style="max-width:100%"></p>'
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        + title
        + "</title><style>body{font-family:sans-serif;font-size:14px;margin:12px}"
        "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 6px}"
        "th{background:#f4f4f4}</style></head><body>" + body + "</body></html>"
    )


def image_path(summary: dict[str, Any] | None, name: str) -> Path | None:
    """The file of one chart of the summary (only the paths the compare task wrote), or None."""
    if summary is None or name not in IMAGES:
        return None
    path = summary.get("files", {}).get(name)
    return Path(path) if path and Path(path).is_file() else None


def create_app() -> Any:
    """The FastAPI app mounted at URL_PREFIX on Airflow's API server (a plugin's `fastapi_apps`)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse, HTMLResponse

    app = FastAPI(title="smaker-airflow A/B comparison")
    may_read = [Depends(requires_access_dag("GET", DagAccessEntity.RUN))]

    @app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse, dependencies=may_read)
    def comparison_page(dag_id: str, run_id: str) -> str:
        return page_html(dag_id, run_id, compare_summary(dag_id, run_id))

    @app.get("/runs/{dag_id}/{run_id}/{name}.png", dependencies=may_read)
    def comparison_image(dag_id: str, run_id: str, name: str) -> FileResponse:
        path = image_path(compare_summary(dag_id, run_id), name)
        if path is None:
            raise HTTPException(status_code=404, detail=f"no {name} chart for this run")
        return FileResponse(path, media_type="image/png")

    return app


@cache
def fastapi_apps() -> list[dict[str, Any]]:
    """The plugin's `fastapi_apps` entry, built once, when the API server asks for it (see SmakerPlugin)."""
    return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "smaker-airflow A/B comparison"}]
