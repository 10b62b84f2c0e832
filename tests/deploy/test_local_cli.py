"""The local deployment as a user runs it: `smaker-airflow up`, `trigger --wait`, `down`.

Everything goes through the installed `smaker-airflow` command in subprocesses,
in a copy of the project, with an environment that carries no Airflow settings
(as a new user's shell). `trigger` finds the Airflow that `up` started (on a
port other than 8080) from the pid file, and posts the run with
`"logical_date": null`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smaker_airflow.config import load_config
from smaker_airflow.dag.loader import dag_file_text
from smaker_airflow.deploy.local import LocalAirflow
from smaker_airflow.plan.cache import load_plan
from smaker_airflow.run.state import safe_run_id
from tests.support.net import free_port
from tests.support.processes import processes_of
from tests.support.project import PROJECT

CLI = Path(sys.executable).parent / "smaker-airflow"
CONFIGS = ("ab_test", "daily_retraining")


def cli(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`smaker-airflow --project P ...` from another folder, in a shell without Airflow settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    return subprocess.run(
        [str(CLI), "--project", str(project), *args],
        cwd=project.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def add_configs(project: Path) -> None:
    """The example configs and the DAG files `smaker-airflow compile` would write."""
    (project / "dags").mkdir(exist_ok=True)
    for name in CONFIGS:
        config = project / "configs" / f"{name}.yaml"
        shutil.copy(PROJECT / "configs" / f"{name}.yaml", config)
        (project / "dags" / f"{name}.py").write_text(dag_file_text(config, project / "dags"))
    # A config not compiled yet: `up` must say so at once instead of waiting for Airflow to list it.
    text = (PROJECT / "configs" / "ab_test.yaml").read_text().replace("dag_id: ab_test", "dag_id: not_compiled")
    (project / "configs" / "not_compiled.yaml").write_text(text)


def test_up_refuses_a_folder_without_configs(tmp_path: Path) -> None:
    """Before starting anything: no Airflow is left running for a folder that is no project."""
    result = cli(tmp_path, "up", "--port", str(free_port()), timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "No config in" in result.stderr
    assert not (tmp_path / ".airflow").exists()


@pytest.mark.slow
def test_up_trigger_down(project: Path) -> None:
    add_configs(project)
    port = free_port()
    pgids: set[int] = set()
    started = time.monotonic()
    try:
        up = cli(project, "up", "--port", str(port))
        assert up.returncode == 0, up.stdout + up.stderr
        print(f"\nup (healthy, both DAGs parsed and unpaused): {time.monotonic() - started:.1f} s")
        assert f"Airflow is up at http://127.0.0.1:{port} (user admin, password admin)" in up.stdout
        for dag_id in CONFIGS:
            assert f"DAG {dag_id} loaded and unpaused" in up.stdout
        assert f"no DAG file {project / 'dags' / 'not_compiled.py'}, so Airflow does not know" in up.stderr
        assert "Run `smaker-airflow compile`" in up.stderr
        info = LocalAirflow.for_project(project).status()
        assert info is not None and info.url == f"http://127.0.0.1:{port}"
        pgids = set(info.pids.values())

        again = cli(project, "up", "--port", str(free_port()), timeout=60)
        assert again.returncode == 1
        assert f"already running at http://127.0.0.1:{port}" in again.stderr
        assert "smaker-airflow down" in again.stderr

        triggered = time.monotonic()
        run = cli(project, "trigger", "daily_retraining", "--wait", "--timeout", "240")
        print(f"trigger --wait: {time.monotonic() - triggered:.1f} s")
        assert run.returncode == 0, run.stdout + run.stderr
        run_id = re.search(r"triggered daily_retraining run (\S+) state", run.stdout)
        assert run_id, run.stdout
        assert f"run {run_id[1]} finished: success" in run.stdout
        assert f"http://127.0.0.1:{port}/dags/daily_retraining/runs/" in run.stdout

        record = LocalAirflow.for_project(project).client().dag_run("daily_retraining", run_id[1])
        assert (record["run_type"], record["logical_date"], record["state"]) == ("manual", None, "success")
        check_outputs(project, run_id[1])
    finally:
        stopping = time.monotonic()
        down = cli(project, "down", timeout=120)
        print(f"down: {time.monotonic() - stopping:.1f} s")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped 4 process group(s)" in down.stdout
    assert processes_of(project, pgids) == []
    assert LocalAirflow.for_project(project).status() is None
    assert "no local Airflow was running" in cli(project, "down", timeout=60).stdout


def check_outputs(project: Path, run_id: str) -> None:
    """Every job's outputs, in the run's own folder, and the run state `prepare` wrote."""
    folder = project / "runs" / "daily_retraining" / safe_run_id(run_id)
    plan = load_plan(load_config(project / "configs" / "daily_retraining.yaml"))
    missing = [out for job in plan.jobs for out in job.outputs if not (folder / out).exists()]
    assert not missing, f"missing outputs in {folder}: {missing}"
    state = json.loads((folder / ".smaker" / "run.json").read_text())
    assert state["run_id"] == run_id
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", state["run_date"])  # derived without a logical date
    metrics = [out for job in plan.jobs for out in job.outputs if out.endswith("metrics.json")]
    assert metrics and 0 <= json.loads((folder / metrics[0]).read_text())["accuracy"] <= 1
