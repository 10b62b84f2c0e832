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
import urllib.request
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


def cli(project: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
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
    # What Airflow must hold for the daily DAG: a pool (missing at first) and the mail connection.
    daily = project / "configs" / "daily_retraining.yaml"
    text = daily.read_text().replace("    # - type: smtp\n    #   conn_id", "    - type: smtp\n      conn_id")
    daily.write_text(
        text.replace("    #   to: [ml-team", "      to: [ml-team", 1) + "\nresources:\n  pool: smaker_cpu\n"
    )
    # A config not compiled yet: `up` must say so at once instead of waiting for Airflow to list it.
    text = (PROJECT / "configs" / "ab_test.yaml").read_text().replace("dag_id: ab_test", "dag_id: not_compiled")
    (project / "configs" / "not_compiled.yaml").write_text(text)


def test_up_refuses_a_folder_without_configs(tmp_path: Path) -> None:
    """Before starting anything: no Airflow is left running for a folder that is no project."""
    result = cli(tmp_path, "up", "--port", str(free_port()), timeout=300)
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
        print(f"\nup (healthy, both DAGs parsed): {time.monotonic() - started:.1f} s")
        assert f"Airflow is up at http://127.0.0.1:{port} (user admin, password admin)" in up.stdout
        for dag_id in CONFIGS:  # nothing runs behind the user's back
            assert f"DAG {dag_id} loaded, paused: no run starts until `smaker-airflow trigger {dag_id}`" in up.stdout
        up_err = " ".join(up.stderr.split())
        assert f"no DAG file {project / 'dags' / 'not_compiled.py'}, so Airflow does not know" in up_err
        assert "Run `smaker-airflow compile`" in up_err
        assert f"names the pool 'smaker_cpu', which does not exist in Airflow at http://127.0.0.1:{port}" in up_err
        info = LocalAirflow.for_project(project).status()
        assert info is not None and info.url == f"http://127.0.0.1:{port}"
        pgids = set(info.pids.values())

        # Again (a demo run after a failure): the running Airflow is used, not refused.
        again = cli(project, "up", "--port", str(free_port()), timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"already running at http://127.0.0.1:{port}" in again.stdout and "using it" in again.stdout
        assert LocalAirflow.for_project(project).status() == info

        # validate looks the connection and the pool up in the metadata database of `up`.
        database = f"sqlite:///{project / '.airflow' / 'airflow.db'}"
        checked = " ".join(cli(project, "validate").stdout.split())
        assert (
            f"connection 'smtp_alerts' exists neither in the environment (AIRFLOW_CONN_SMTP_ALERTS) nor in the metadata database {database}"
            in checked
        )
        assert f"pool 'smaker_cpu', which does not exist in the metadata database {database}" in checked
        api(project, "POST", "/api/v2/pools", {"name": "smaker_cpu", "slots": 0})
        api(project, "POST", "/api/v2/connections", {"connection_id": "smtp_alerts", "conn_type": "smtp"})
        checked = " ".join(cli(project, "validate").stdout.split())
        assert "smtp_alerts" not in checked
        assert f"the pool 'smaker_cpu' (resources.pool) has 0 slot(s) in the metadata database {database}" in checked
        api(project, "DELETE", "/api/v2/pools/smaker_cpu")
        api(project, "POST", "/api/v2/pools", {"name": "smaker_cpu", "slots": 1})

        triggered = time.monotonic()
        run = cli(project, "trigger", "daily_retraining", "--wait", "--timeout", "900", timeout=1000)
        print(f"trigger --wait: {time.monotonic() - triggered:.1f} s")
        assert run.returncode == 0, run.stdout + run.stderr
        assert "unpaused DAG daily_retraining" in run.stdout and "schedule '@daily' is now on" in run.stdout
        assert "pool" not in run.stderr  # big enough now
        run_id = re.search(r"triggered daily_retraining run (\S+) state", run.stdout)
        assert run_id, run.stdout
        assert f"run {run_id[1]} finished: success" in run.stdout
        assert f"http://127.0.0.1:{port}/dags/daily_retraining/runs/" in run.stdout

        record = LocalAirflow.for_project(project).client().dag_run("daily_retraining", run_id[1])
        assert (record["run_type"], record["logical_date"], record["state"]) == ("manual", None, "success")
        check_outputs(project, run_id[1])
    finally:
        stopping = time.monotonic()
        down = cli(project, "down", timeout=300)
        print(f"down: {time.monotonic() - stopping:.1f} s")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped 4 process group(s)" in down.stdout
    assert processes_of(project, pgids) == []
    assert LocalAirflow.for_project(project).status() is None
    assert "no local Airflow was running" in cli(project, "down", timeout=300).stdout


def api(project: Path, method: str, path: str, body: dict[str, object] | None = None) -> None:
    """A REST call the client has no method for (creating pools and connections), as the UI would."""
    client = LocalAirflow.for_project(project).client()
    request = urllib.request.Request(
        client.base_url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {client.token()}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status in (200, 201, 204), response.read()


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
