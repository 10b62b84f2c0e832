"""Case 18 (fidelity): a daily DAG over a landing folder, on a real scheduler (issue 12).

The DAG is parsed with one CSV in the folder; the run of one day processes it; a second CSV
lands; the run of the next day (consecutive logical dates) plans at its start (the mapped layout), processes both
files, and leaves the same files as native `snakemake --cores 2` (sha256). The UI shows the
new job: the rule's task has a map index per file, labelled with its wildcards.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from smaker_airflow.run import state as runs
from tests.plan.test_reads_layout import LANDING
from tests.support.airflow_server import Server


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_landing_between_two_daily_runs_is_processed_by_the_second(
    airflow_server: Server, tmp_path: Path
) -> None:
    server = airflow_server
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "day1.csv").write_text("a\nb\n")
    # The runs of yesterday and today, started from here so that the file lands between them
    # (Airflow runs no task before its logical date, nor before the DAG's start_date; with a
    # daily schedule, unpausing would start today's run before the file lands).
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    config = (
        f"dag_id: landing_wf\nschedule: null\nstart_date: '{(today - timedelta(days=1)).date()}'\n"
        "workflow: {snakefile: workflows/landing_wf/Snakefile}\nparams: {}\n"
        f"config:\n  landing: {landing}\n"
    )
    server.deploy("landing_wf", config, {"Snakefile": LANDING})

    def run_on(day: datetime) -> dict[str, Any]:
        run_id = f"daily__{day.date()}"
        server.api(
            "POST",
            "/api/v2/dags/landing_wf/dagRuns",
            {"dag_run_id": run_id, "logical_date": day.isoformat(), "conf": {}},
        )
        return server.client.wait_for_run("landing_wf", run_id, timeout=600)

    first = run_on(today - timedelta(days=1))
    assert first["state"] == "success", first
    first_folder = server.folder("landing_wf", first["dag_run_id"])
    assert (first_folder / "report" / "rows.txt").read_text().count("counts/") == 1

    (landing / "day2.csv").write_text("c\nd\ne\n")  # lands overnight
    second = run_on(today)
    second_id = second["dag_run_id"]
    assert second["state"] == "success", second
    folder = server.folder("landing_wf", second_id)
    plan = runs.read_run_plan(folder)
    assert sorted(job.target for job in plan.jobs) == ["count_rows:sample=day1", "count_rows:sample=day2", "report:"]
    # The UI: one map index per file, labelled with its wildcards.
    labels = sorted(
        ti.get("rendered_map_index") or ""
        for ti in server.client.task_instances("landing_wf", second_id)
        if ti["task_id"] == "count_rows"
    )
    assert labels == ["sample=day1", "sample=day2"], labels

    native = tmp_path / "native"
    (native / "workflow").mkdir(parents=True)
    (native / "workflow" / "Snakefile").write_text(LANDING)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", "workflow/Snakefile", "--cores", "2", "--config", f"landing={landing}"],
        cwd=native, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for path in ("report/rows.txt", "counts/day1.txt", "counts/day2.txt"):
        assert _sha(folder / path) == _sha(native / path), path
    assert runs.safe_run_id(second_id) == folder.name
