"""Load: ten runs queued at once on the real local Airflow finish, never above the configured caps.

The DAG is a small generalized workflow (Stage modules: one `prep` job, two `fit` jobs
over a grid) with `max_active_runs: 3` and `max_active_tasks: 1` (per run in Airflow 3).
The local Airflow has four task slots, so the caps, not the slots, are what bind. The
concurrency is read back from the REST API: the start and end of every DAG run and task
instance.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

import pytest

from tests.support.airflow_server import Server, interval, max_overlap
from tests.support.project import TINY_PREP, incomplete_markers

RUNS = 10
MAX_ACTIVE_RUNS = 3
MAX_ACTIVE_TASKS = 1
LOAD_FIT = """
from smaker_airflow import Stage

fit = Stage(config, "fit", uses=["alpha"], after=["prep"])


rule fit:
    input:
        fit.input("prep", "data.txt"),
    output:
        fit.metrics("metrics.json"),
    params:
        alpha=fit.param("alpha"),
    run:
        import json

        size = int(open(input[0]).read())
        with open(output[0], "w") as out:
            json.dump({"alpha": params.alpha, "size": size, "score": size / (1 + params.alpha)}, out)
"""
LOAD_CONFIG = f"""
dag_id: load_mini
schedule: null
start_date: 2026-11-01
max_active_runs: {MAX_ACTIVE_RUNS}
max_active_tasks: {MAX_ACTIVE_TASKS}
workflow:
  modules:
    prep: workflows/load_mini/load_prep.smk
    fit: workflows/load_mini/load_fit.smk
params:
  size: 10
  alpha: [0.5, 2.0]
"""


def check_outputs(server: Server, run_id: str) -> None:
    """Both grid points of the run were fitted on the run's own prep output."""
    folder = server.folder("load_mini", run_id)
    metrics = {p.parent.name: json.loads(p.read_text()) for p in folder.rglob("metrics.json")}
    assert metrics == {
        "alpha~0.5": {"alpha": 0.5, "size": 10, "score": 10 / 1.5},
        "alpha~2.0": {"alpha": 2.0, "size": 10, "score": 10 / 3.0},
    }, folder
    assert len(list((folder / ".snakemake" / "metadata").iterdir())) == 3  # prep + 2 fits, this run's own
    assert incomplete_markers(folder) == []


@pytest.mark.slow
def test_ten_runs_queued_at_once_complete_within_the_caps(airflow_server: Server) -> None:
    server = airflow_server
    server.deploy("load_mini", LOAD_CONFIG, {"load_prep.smk": TINY_PREP, "load_fit.smk": LOAD_FIT})
    start = time.monotonic()
    run_ids = [server.client.trigger("load_mini", run_id=f"load_{i:02d}")["dag_run_id"] for i in range(RUNS)]
    queued = time.monotonic() - start
    done = server.wait_for_runs("load_mini", RUNS, timeout=900)
    seconds = time.monotonic() - start

    assert sorted(r["dag_run_id"] for r in done) == run_ids
    failed = [r["dag_run_id"] for r in done if r["state"] != "success"]
    assert not failed, server.failure_report("load_mini", failed)
    tasks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run_id in run_ids:
        tasks[run_id] = list(server.task_instances("load_mini", run_id).values())
        assert len(tasks[run_id]) == 4 and {ti["state"] for ti in tasks[run_id]} == {"success"}
        check_outputs(server, run_id)

    runs_at_once = max_overlap(interval(r) for r in done)
    per_run = max(max_overlap(interval(ti) for ti in tis) for tis in tasks.values())
    all_tasks: list[tuple[datetime, datetime]] = [interval(ti) for tis in tasks.values() for ti in tis]
    tasks_at_once = max_overlap(all_tasks)
    print(
        f"\nload: {RUNS} runs ({len(all_tasks)} tasks) done in {seconds:.1f} s (queued in {queued:.1f} s); "
        f"at once: {runs_at_once} runs (cap {MAX_ACTIVE_RUNS}), {per_run} task per run (cap {MAX_ACTIVE_TASKS}), "
        f"{tasks_at_once} tasks in all (slots {server.local.parallelism})"
    )
    assert runs_at_once <= MAX_ACTIVE_RUNS
    assert per_run <= MAX_ACTIVE_TASKS  # the two fit jobs of a run could run together, but never did
    assert tasks_at_once <= MAX_ACTIVE_RUNS * MAX_ACTIVE_TASKS
    assert tasks_at_once >= 2  # the runs did run side by side: the caps were what held them back
