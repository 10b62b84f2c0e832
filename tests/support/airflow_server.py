"""A real local Airflow (api-server, scheduler, dag-processor, triggerer; LocalExecutor) for the system tests.

Started once per test session by the `airflow_server` fixture (tests/conftest.py) and shared
by tests/system/test_faults.py, test_load.py and test_security.py.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from smaker_airflow.config import load_config
from smaker_airflow.dag.loader import dag_file_text
from smaker_airflow.deploy.local import LocalAirflow
from smaker_airflow.deploy.rest import AirflowClient
from smaker_airflow.plan.cache import load_plan
from smaker_airflow.run import state as runs
from tests.support.net import free_port
from tests.support.processes import kill_groups, wait_until


def max_overlap(intervals: Iterable[tuple[datetime, datetime]]) -> int:
    """The largest number of intervals open at one instant (one ending as another starts: no overlap)."""
    events = sorted((moment, step) for start, end in intervals for moment, step in ((start, 1), (end, -1)))
    open_now = peak = 0
    for _, step in events:  # at equal times -1 sorts first
        open_now += step
        peak = max(peak, open_now)
    return peak


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def interval(row: dict[str, Any]) -> tuple[datetime, datetime]:
    """Start and end of a DAG run or task instance as the REST API reports them."""
    return when(row["start_date"]), when(row["end_date"])


@dataclass
class Server:
    """A running local Airflow and the project whose dags/ folder it parses."""

    local: LocalAirflow
    project: Path
    client: AirflowClient
    seconds_to_start: float
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)  # schedulers started by a test
    stray_groups: set[int] = field(default_factory=set)  # process groups a killed scheduler left

    def folder(self, dag_id: str, run_id: str) -> Path:
        return self.project / "runs" / dag_id / runs.safe_run_id(run_id)

    def deploy(self, dag_id: str, config: str, workflows: dict[str, str]) -> None:
        """Write a config, its workflow and its DAG file; wait until Airflow has parsed it; unpause it."""
        # One folder per DAG: a plan depends on every file of its workflow's folder.
        folder = self.project / "workflows" / dag_id
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in workflows.items():
            (folder / name).write_text(text)
        config_path = self.project / "configs" / f"{dag_id}.yaml"
        config_path.write_text(config)
        load_plan(load_config(config_path))  # warm the plan cache the dag-processor reads
        dags = self.project / "dags"
        (dags / f"{dag_id}.py").write_text(dag_file_text(config_path, dags))
        self.client.wait_for_dag(dag_id, timeout=180)
        self.client.unpause(dag_id)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """A REST call the client has no method for, with the client's token and retries (5xx: a busy SQLite)."""
        return self.client.call(method, path, body)

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"])

    def wait_for_runs(self, dag_id: str, count: int, timeout: float) -> list[dict[str, Any]]:
        """Wait until the DAG has `count` runs, all finished; return them."""
        done: list[dict[str, Any]] = []

        def finished() -> bool:
            done[:] = self.dag_runs(dag_id)
            return len(done) >= count and all(r["state"] in ("success", "failed") for r in done)

        wait_until(finished, timeout, f"{count} finished runs of {dag_id}", poll=2)
        return done

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        return {ti["task_id"]: ti for ti in self.client.task_instances(dag_id, run_id)}

    def failure_report(self, dag_id: str, run_ids: Iterable[str], lines: int = 40) -> str:
        """Each run's task states, and the last `lines` lines of every try of its unsuccessful tasks.

        For an assertion message: a run that failed in CI must say why without a rerun.
        """
        report = []
        for run_id in run_ids:
            tis = self.task_instances(dag_id, run_id)
            report.append(f"== {run_id}: " + ", ".join(f"{t}={ti['state']}" for t, ti in sorted(tis.items())))
            folder = self.local.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
            for task_id, ti in sorted(tis.items()):
                if ti["state"] == "success":
                    continue
                for log in sorted(folder.glob(f"task_id={task_id}/**/attempt=*.log*")):
                    tail = log.read_text(errors="replace").splitlines()[-lines:]
                    report.append(f"-- {log.relative_to(folder)}\n" + "\n".join(tail))
        return "\n".join(report)

    def mark_failed(self, dag_id: str, run_id: str, task_id: str) -> None:
        """What a user does in the UI: set a running task instance to failed."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/{task_id}"
        self.api("PATCH", path, {"new_state": "failed"})


def start_server() -> Server:
    """Start a local Airflow on a free port in a temporary project (30-60 s on a loaded machine)."""
    root = Path(tempfile.mkdtemp(prefix="smaker-faults-"))
    project = root / "project"
    for sub in ("configs", "workflows", "dags", "gates"):
        (project / sub).mkdir(parents=True)
    # Four task slots: more than the load test's caps, so that the caps are what binds. LocalAirflow
    # sets [workers] min_heartbeat_interval = 1, as `smaker-airflow up` does: a slot is freed about
    # 1 s after its task exits instead of up to 5 s (docs/deploy.md, "The 5-second late exit").
    local = LocalAirflow(
        home=root / ".airflow", dags_folder=project / "dags", port=free_port(), triggerer=True, parallelism=4
    )
    try:
        info = local.up(timeout=300)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    print(f"\nlocal Airflow healthy in {info.seconds} s at {info.url}")
    return Server(local, project, local.client(), info.seconds or 0.0)


def stop_server(server: Server) -> None:
    """Stop Airflow, what a test's killed scheduler left, and the schedulers tests started; remove the folder."""
    try:
        server.local.down()
    finally:
        kill_groups(server.stray_groups)
        for proc in server.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        shutil.rmtree(server.local.home.parent, ignore_errors=True)
