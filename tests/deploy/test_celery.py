"""The distributed deployment: CeleryExecutor, PostgreSQL metadata DB, Redis broker, two workers.

The slow test starts PostgreSQL and Redis if this machine has not (and stops
what it started), creates a database of its own, starts api-server, scheduler,
dag-processor and two `airflow celery worker` processes (one task slot each),
runs the A/B DAG through the REST API and reads from the task instance
records which worker ran which task. The fast ones check that Airflow knows
every setting we pass; what a worker that cannot see the run folder says is in
tests/operators/test_job.py.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from smaker_airflow.dag.loader import dag_file_text
from smaker_airflow.deploy.celery import WORKER_NAME_ENV, CeleryAirflow, _worker_ready, worker_hostname
from smaker_airflow.errors import SmakerError
from smaker_airflow.run.state import safe_run_id
from tests.support.net import free_port
from tests.support.processes import processes_of
from tests.support.project import PROJECT

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


# -- servers: use the machine's, start them if they are down -------------------------
def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def _wait_listening(host: str, port: int, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not _listening(host, port):
        assert time.monotonic() < deadline, f"{what} is not listening on {host}:{port} after {timeout} s"
        time.sleep(0.3)


def _pg_version() -> str:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    assert versions and shutil.which("pg_ctlcluster"), (
        "PostgreSQL is not running on 127.0.0.1:5432 and pg_ctlcluster is not installed to start it."
    )
    return versions[-1]


@pytest.fixture(scope="module")
def postgres() -> Iterator[None]:
    started = not _listening(PG_HOST, PG_PORT)
    if started:
        pg_ctl = ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main"]
        subprocess.run([*pg_ctl, "start"], check=True, capture_output=True, timeout=60)
        _wait_listening(PG_HOST, PG_PORT, "PostgreSQL")
    yield
    if started:
        subprocess.run([*pg_ctl, "stop"], check=False, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[None]:
    started = not _listening(REDIS_HOST, REDIS_PORT)
    if started:
        assert shutil.which("redis-server"), "Redis is not running on 127.0.0.1:6379 and redis-server is not installed."
        command = [
            "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", str(REDIS_PORT),
            "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log",
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=60)
        _wait_listening(REDIS_HOST, REDIS_PORT, "Redis")
    yield
    if started:
        import redis

        with contextlib.suppress(redis.exceptions.ConnectionError):  # it closes the connection as it exits
            redis.Redis(host=REDIS_HOST, port=REDIS_PORT).shutdown(nosave=True)


@pytest.fixture
def database_url(postgres: None) -> Iterator[str]:
    """A database of this test's own, dropped at the end (with whatever still holds it open)."""
    import psycopg2

    name = f"smaker_celery_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    admin.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
            assert cur.fetchone() == (0,)
    finally:
        admin.close()


@pytest.fixture
def broker_url(redis_server: None) -> Iterator[str]:
    """An empty Redis database number of its own (another test's queues never mix with ours)."""
    import redis

    for db in range(15, 0, -1):
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
        # Empty, and claimed atomically: a test running in parallel takes another one.
        if client.dbsize() == 0 and client.set("smaker-airflow-test", "taken", nx=True):
            break
        client.close()
    else:
        pytest.fail("Every Redis database 1-15 holds keys: none is free for this test.")
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    client.flushdb()
    client.close()


def make_celery(project: Path, database_url: str, broker_url: str) -> CeleryAirflow:
    return CeleryAirflow(
        home=project / ".airflow",
        dags_folder=project / "dags",
        port=free_port(),
        sql_alchemy_conn=database_url,
        broker_url=broker_url,
        workers=2,
        worker_concurrency=1,
    )


# -- fast ---------------------------------------------------------------------------
def test_airflow_knows_every_setting_we_pass(tmp_path: Path) -> None:
    """Each AIRFLOW__SECTION__KEY is an option of Airflow 3.3 or of the installed Celery provider."""
    airflow = make_celery(tmp_path, "postgresql+psycopg2://u@h:5432/db", "redis://h:6379/3")
    env = airflow.env()
    settings = sorted(
        tuple(k.lower().split("__")[1:])
        for k in env
        if k.startswith("AIRFLOW__") and not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))
    )
    probe = (
        "import json, sys; from airflow.configuration import conf; conf.load_providers_configuration(); "
        "d = conf.configuration_description; keys = json.loads(sys.argv[1]); "
        "print(json.dumps({'unknown': [k for k in keys if k[1] not in d.get(k[0], {}).get('options', {})], "
        "'values': [conf.get(*k) for k in keys]}))"
    )
    tmp_path.joinpath(".airflow").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(settings)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["unknown"] == []
    got = dict(zip([tuple(k) for k in settings], answer["values"], strict=True))
    assert got[("core", "executor")] == "CeleryExecutor"
    assert got[("celery", "broker_url")] == "redis://h:6379/3"
    assert got[("celery", "result_backend")] == "db+postgresql+psycopg2://u@h:5432/db"
    assert got[("database", "sql_alchemy_conn")] == "postgresql+psycopg2://u@h:5432/db"
    assert got[("core", "hostname_callable")] == "smaker_airflow.deploy.celery.worker_hostname"
    assert set(airflow.components) == {"api-server", "scheduler", "dag-processor", "celery-worker-1", "celery-worker-2"}
    assert airflow.command("celery-worker-2")[1:] == [
        "celery", "worker", "--concurrency", "1", "--celery-hostname", "celery-worker-2@%h", "--skip-serve-logs",
    ]  # fmt: skip


def test_workers_get_their_names_and_the_other_components_the_local_commands(tmp_path: Path) -> None:
    """The two hooks CeleryAirflow overrides; `up()` starts every component through them."""
    airflow = make_celery(tmp_path, "postgresql+psycopg2://u@h:5432/db", "redis://h:6379/3")
    assert airflow.component_env("celery-worker-1")[WORKER_NAME_ENV] == "celery-worker-1"
    assert WORKER_NAME_ENV not in airflow.component_env("scheduler")
    assert airflow.component_env("scheduler")["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert airflow.command("scheduler")[1:] == ["scheduler", "--skip-serve-logs"]
    assert airflow.command("api-server")[1:] == ["api-server"]


def test_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SmakerError, match=r"PostgreSQL metadata DB .*sqlite"):
        make_celery(tmp_path, f"sqlite:///{tmp_path}/airflow.db", "redis://h:6379/0")
    with pytest.raises(SmakerError, match=r"Redis or RabbitMQ broker URL"):
        make_celery(tmp_path, "postgresql://u@h/db", "memory://")


def test_worker_hostname_names_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKER_NAME_ENV, raising=False)
    assert worker_hostname() == socket.getfqdn()
    monkeypatch.setenv(WORKER_NAME_ENV, "celery-worker-7")
    assert worker_hostname() == f"celery-worker-7@{socket.getfqdn()}"


def test_worker_counts_as_ready_after_its_last_start_only(tmp_path: Path) -> None:
    log = tmp_path / "celery-worker-1.log"
    ready = "2026-11-25T12:43:20.972700Z [info     ] celery-worker-1@vm ready.      [celery.apps.worker]\n"
    log.write_text("\n=== smaker-airflow celery 2026-11-25 12:00:00 ===\n" + ready)
    assert _worker_ready(log, "celery-worker-1")
    assert not _worker_ready(log, "celery-worker-2")
    log.write_text(log.read_text() + "=== smaker-airflow celery 2026-11-25 13:00:00 ===\nstarting\n")
    assert not _worker_ready(log, "celery-worker-1")  # that line came from the previous start
    assert not _worker_ready(tmp_path / "missing.log", "celery-worker-1")


# -- slow: the real thing ------------------------------------------------------------------
@pytest.mark.slow
def test_ab_dag_on_two_celery_workers(project: Path, database_url: str, broker_url: str) -> None:
    config = project / "configs" / "ab_test.yaml"
    shutil.copy(PROJECT / "configs" / "ab_test.yaml", config)
    (project / "dags").mkdir()
    (project / "dags" / "ab_test.py").write_text(dag_file_text(config, project / "dags"))
    airflow = make_celery(project, database_url, broker_url)
    pgids: set[int] = set()
    try:
        info = airflow.up(timeout=300)
        pgids = set(info.pids.values())
        print(f"\ntime to healthy (migrate + 5 components + 2 workers ready): {info.seconds} s")
        assert set(info.pids) == set(airflow.components)

        client = airflow.client()
        client.wait_for_dag("ab_test", timeout=600)
        client.unpause("ab_test")
        started = time.monotonic()
        run = client.trigger("ab_test")
        run = client.wait_for_run("ab_test", run["dag_run_id"], timeout=900, poll=1)
        print(f"run time: {time.monotonic() - started:.1f} s")
        tis = client.task_instances("ab_test", run["dag_run_id"])
        assert run["state"] == "success", [(ti["task_id"], ti["state"]) for ti in tis]
    finally:
        stopping = time.monotonic()
        airflow.down()
        print(f"time to stop: {time.monotonic() - stopping:.1f} s")
    assert processes_of(project, pgids) == []
    assert airflow.status() is None
    check_workers(tis)
    folder = project / "runs" / "ab_test" / safe_run_id(run["dag_run_id"])
    assert len(list(folder.glob("evaluate/**/metrics.json"))) == 3  # one per arm


def check_workers(tis: list[dict[str, Any]]) -> None:
    """Every task ran on a Celery worker, both workers ran tasks, and some ran at the same time."""
    ran = {ti["task_id"]: ti["hostname"] for ti in tis}
    print("which worker ran what:\n" + "\n".join(f"  {host}: {task}" for task, host in sorted(ran.items())))
    # `promote` ends skipped when no arm is surely better than the control (the example's usual verdict).
    states = {ti["task_id"]: ti["state"] for ti in tis}
    assert all(state == "success" or (task, state) == ("promote", "skipped") for task, state in states.items()), states
    workers = {host.split("@")[0] for host in ran.values()}
    assert workers == {"celery-worker-1", "celery-worker-2"}, ran
    spans = sorted((_time(ti["start_date"]), _time(ti["end_date"]), ti["hostname"]) for ti in tis)
    overlaps = [(a, b) for a, b in itertools.combinations(spans, 2) if b[0] < a[1] and a[2] != b[2]]
    assert overlaps, f"no two tasks ran at the same time on different workers: {spans}"


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
