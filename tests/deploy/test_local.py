"""`smaker-airflow up` / `down`: a real Airflow, and real processes for the stop logic.

The slow test starts Airflow (api-server, scheduler, dag-processor, triggerer)
in a temporary project, runs a DAG through the REST API and stops everything.
The fast ones check the environment Airflow really reads, the refusals and the
process-tree cleanup with plain Python processes.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from smaker_airflow.deploy.local import PID_FILE, LocalAirflow
from smaker_airflow.errors import SmakerError
from smaker_airflow.run import job_server
from tests.support.net import free_port
from tests.support.processes import processes_of
from tests.support.project import PROJECT, load_dag

DAG_FILE = """
from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG("la_touch", schedule=None, start_date=pendulum.datetime(2024, 1, 1), catchup=False):
    BashOperator(task_id="touch", bash_command="echo made > {out} && echo wrote")

with DAG("la_nap", schedule=None, start_date=pendulum.datetime(2024, 1, 1), catchup=False):
    BashOperator(task_id="nap", bash_command="sleep 300")
"""


def make_local(tmp_path: Path, port: int | None = None) -> LocalAirflow:
    return LocalAirflow(home=tmp_path / ".airflow", dags_folder=tmp_path / "dags", port=port or free_port())


# -- fast: settings, refusals, stopping ---------------------------------------
def test_env_drops_inherited_airflow_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("AIRFLOW__CORE__DEFAULT_TIMEZONE", "Asia/Tokyo")
    monkeypatch.setenv("AIRFLOW_CONN_MY_SMTP", "smtp://mail:25")
    local = make_local(tmp_path, port=18555)
    env = local.env()
    assert "AIRFLOW__CORE__DEFAULT_TIMEZONE" not in env  # the shell's Airflow settings do not leak in
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW_CONN_MY_SMTP"] == "smtp://mail:25"  # connections from the environment still work
    assert env["AIRFLOW_HOME"] == str(tmp_path / ".airflow")
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18555/execution/"


def test_job_servers_live_under_home_unless_the_user_chose_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(job_server.DIR_ENV, raising=False)
    project = Path("/srv/ml-project")  # env() creates nothing
    assert make_local(project).env()[job_server.DIR_ENV] == "/srv/ml-project/.airflow/job-servers"
    deep = project / ("d" * 70)  # a socket path there would pass the 107 bytes of a Unix socket
    assert job_server.DIR_ENV not in make_local(deep).env()  # the default folder in <tmp> then
    monkeypatch.setenv(job_server.DIR_ENV, "/elsewhere")
    assert make_local(project).env()[job_server.DIR_ENV] == "/elsewhere"


def test_airflow_reads_these_settings(tmp_path: Path) -> None:
    """Ask Airflow's own config parser, in the environment the components get."""
    local = make_local(tmp_path, port=18556)
    local.parallelism = 3
    local.home.mkdir(parents=True)
    keys = [
        ("core", "dags_folder"),
        ("core", "load_examples"),
        ("core", "executor"),
        ("core", "parallelism"),
        ("database", "sql_alchemy_conn"),
        ("api", "host"),
        ("api", "port"),
        ("core", "auth_manager"),
        ("core", "execution_api_server_url"),
        ("workers", "min_heartbeat_interval"),
    ]
    probe = f"import json; from airflow.configuration import conf; print(json.dumps([conf.get(*k) for k in {keys}]))"
    result = subprocess.run([sys.executable, "-c", probe], env=local.env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    got = dict(zip(keys, json.loads(result.stdout.strip().splitlines()[-1]), strict=True))
    assert got == {
        ("core", "dags_folder"): str(tmp_path / "dags"),
        ("core", "load_examples"): "False",
        ("core", "executor"): "LocalExecutor",
        ("core", "parallelism"): "3",
        ("database", "sql_alchemy_conn"): f"sqlite:///{tmp_path / '.airflow' / 'airflow.db'}",
        ("api", "host"): "127.0.0.1",
        ("api", "port"): "18556",
        ("core", "auth_manager"): "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        ("core", "execution_api_server_url"): "http://127.0.0.1:18556/execution/",
        ("workers", "min_heartbeat_interval"): "1",  # the late exit: 1.1 s instead of 5.1 s (docs/deploy.md)
    }


def test_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        local = make_local(tmp_path, port=busy.getsockname()[1])
        with pytest.raises(SmakerError, match=r"Port \d+ on 127.0.0.1 is busy.*--port"):
            local.up()
    assert not (local.home / PID_FILE).exists()


def test_stale_pid_file_is_cleaned_up(tmp_path: Path) -> None:
    local = make_local(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_pid_file(local, {"scheduler": dead})
    assert local.status() is None
    assert not local.pid_file.exists()
    assert local.down() == []


def test_unreadable_pid_file_is_a_clear_error(tmp_path: Path) -> None:
    local = make_local(tmp_path)
    local.home.mkdir(parents=True)
    local.pid_file.write_text("{not json")
    with pytest.raises(SmakerError, match=r"Cannot read the pid file .*delete it"):
        local.status()


# A component that ignores SIGTERM and has a child in a session of its own,
# itself deaf to SIGTERM: what a task process running a shell command looks like.
STUBBORN = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    time.sleep(300)
    """
)


@pytest.fixture
def stubborn(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN], start_new_session=True)
    deadline = time.monotonic() + 120
    while not (children := psutil.Process(proc.pid).children()):
        assert time.monotonic() < deadline, "the stubborn process did not start its child within 120 s"
        time.sleep(0.05)
    yield proc
    for child in children:  # whatever the test did, leave nothing behind
        with contextlib.suppress(psutil.Error):
            child.kill()
    proc.kill()
    proc.wait()


def test_running_pid_file_refuses_a_second_up(tmp_path: Path, stubborn: subprocess.Popen[bytes]) -> None:
    local = make_local(tmp_path)
    write_pid_file(local, {"scheduler": stubborn})
    with pytest.raises(SmakerError, match=rf"already running at {local.url} \(pids scheduler {stubborn.pid}.*down"):
        make_local(tmp_path).up()  # another CLI call, another port: still refused


def test_down_stops_the_whole_tree(
    tmp_path: Path, stubborn: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("smaker_airflow.deploy.local.FIRST_GRACE", 0.3)
    monkeypatch.setattr("smaker_airflow.deploy.local.STOP_GRACE", 0.3)
    child = psutil.Process(stubborn.pid).children()[0]
    assert os.getpgid(child.pid) != stubborn.pid  # out of reach of a signal to the recorded group
    local = make_local(tmp_path)
    write_pid_file(local, {"scheduler": stubborn})
    assert local.down() == [stubborn.pid]
    assert stubborn.wait(timeout=60) == -9  # deaf to SIGTERM: killed
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert not local.pid_file.exists()


def write_pid_file(local: LocalAirflow, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """The pid file as `up()` writes it."""
    local.home.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, proc in procs.items():
        try:
            start = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            start = 1.0  # long gone
        rows.append({"name": name, "pid": proc.pid, "pgid": proc.pid, "start": start})
    local.pid_file.write_text(json.dumps({"url": local.url, "home": str(local.home), "processes": rows}))


# -- import cost: the deploy tooling stays out of DAG files -----------------------
@pytest.mark.slow
def test_a_dag_file_never_imports_the_deploy_tooling(project: Path) -> None:
    """Importing a DAG file (dag.loader, operators, the package) leaves deploy/ unimported."""
    load_dag(project, "ab_test")  # builds the plan cache the DAG file then reads
    dag_file = project / "dags" / "ab_test.py"
    code = (
        "import runpy, sys\n"
        f"runpy.run_path({str(dag_file)!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith('smaker_airflow.deploy')))\n"
        "print('smaker_airflow.dag.loader' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-2:] == ["[]", "True"]


def test_only_deploy_imports_psutil_at_import_time() -> None:
    """psutil is needed at run time only (stopping process groups); Airflow imports it itself,
    so DAG files pay for it anyway, but our Airflow-free modules must not."""
    code = (
        "import sys\n"
        "import smaker_airflow._procs, smaker_airflow.run.job_process, smaker_airflow.plan.planner\n"
        "print('psutil' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
    package = PROJECT / "smaker_airflow"
    top_level = [
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.Import | ast.ImportFrom)
        and "psutil" in ([alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module])
    ]
    assert top_level and all(path.startswith("deploy/") for path in top_level), top_level


# -- slow: the real thing -------------------------------------------------------
@pytest.mark.slow
def test_up_run_down(tmp_path: Path) -> None:
    out = tmp_path / "made.txt"
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "la_dags.py").write_text(DAG_FILE.format(out=out))
    local = make_local(tmp_path)
    try:
        info = local.up(timeout=300)
        print(f"\ntime to healthy: {info.seconds} s")
        assert info.url == local.url
        assert (info.username, info.password) == ("admin", "admin")
        assert set(info.pids) == {"api-server", "scheduler", "dag-processor", "triggerer"}
        assert local.status() == replace(info, seconds=None)

        with pytest.raises(SmakerError, match=r"already running.*smaker-airflow down"):
            LocalAirflow(home=local.home, dags_folder=local.dags_folder, port=free_port()).up()

        client = local.client()
        client.wait_for_dag("la_touch", timeout=600)
        client.unpause("la_touch")
        started = time.monotonic()
        run = client.trigger("la_touch")
        assert run["logical_date"] is None
        run = client.wait_for_run("la_touch", run["dag_run_id"], timeout=600, poll=0.5)
        print(f"time for the run: {time.monotonic() - started:.1f} s")
        assert run["state"] == "success"
        assert out.read_text() == "made\n"

        # Leave a task running so that down() has a shell in a session of its own to stop.
        client.wait_for_dag("la_nap", timeout=600)
        client.unpause("la_nap")
        client.trigger("la_nap")
        wait_for(lambda: any("sleep 300" in p for p in processes_of(local.home)), 600, "the nap task's `sleep 300`")
        pgids = set(info.pids.values())
    finally:
        stopping = time.monotonic()
        stopped = local.down()
        print(f"time to stop: {time.monotonic() - stopping:.1f} s")
    assert sorted(stopped) == sorted(info.pids.values())
    assert processes_of(local.home, pgids) == []
    assert local.status() is None
    assert not local.pid_file.exists()

    # The next `up` of the same project keeps its history and skips the migration.
    try:
        again = local.up(timeout=300)
        print(f"time to healthy again: {again.seconds} s")
        assert local.client().dag_run("la_touch", run["dag_run_id"])["state"] == "success"
        pgids = set(again.pids.values())
    finally:
        local.down()
    assert processes_of(local.home, pgids) == []
    assert (local.home / "logs" / "db-migrate.log").read_text().count("Database migration done") == 1


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not start within {timeout:g} s"
        time.sleep(0.5)
