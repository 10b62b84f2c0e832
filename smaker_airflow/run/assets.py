"""What a job's asset events say: the files this run really wrote, so a consumer needs nothing else.

A job task's outlets are Assets fixed when the DAG file is parsed (`x-smaker://<dag_id>/<path>`,
dag/production.py), named by the deployed plan's paths. A run whose trigger form moved the
outputs wrote other files; each event's `extra` says which, with the run and its values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smaker_airflow.plan.model import Job
from smaker_airflow.run.publish import sha256
from smaker_airflow.run.state import RunState
from smaker_airflow.run.storage import url_of


def output_event_extras(folder: Path, deployed: Job, job: Job, state: RunState, arm: str) -> dict[str, dict[str, Any]]:
    """Deployed output path -> the `extra` of its asset event for this run.

    `deployed` is the job as the DAG was built (its outputs name the Assets), `job` the same
    job in the run's own plan (where this run wrote them, same order). Each extra:
    ``{"path": absolute file, "relative_path": run-relative, "run_id", "arm", "wildcards",
    "overrides": {param: [values]}, "sha256": hex or None for a directory}``.
    """
    extras = {}
    for deployed_path, path in zip(deployed.outputs, job.outputs, strict=True):
        file = folder / path
        extras[deployed_path] = {
            "path": str(file.absolute()) if isinstance(file, Path) else url_of(file),  # a URL in object storage
            "relative_path": path,
            "run_id": state.run_id,
            "arm": arm,
            "wildcards": dict(job.wildcards),
            "overrides": dict(state.overrides),
            "sha256": sha256(file) if file.is_file() else None,
        }
    return extras


def asset_path(uri: str) -> str:
    """The run-relative path an output Asset's URI names (`x-smaker://<dag_id>/<path>` -> `<path>`)."""
    return uri.split("/", 3)[3] if uri.count("/") >= 3 else ""
