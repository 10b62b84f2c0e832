"""Test setup: a real Airflow with its own temporary AIRFLOW_HOME and a migrated SQLite DB.

The environment is set before anything imports Airflow (this file is loaded
first by pytest). Scratch projects are made inside the DAGs folder, so their
DAG files are found there, as `dag.test()` requires (it parses that folder).

The fixtures every folder shares live here; the code behind them is in tests/support/.
Every test under tests/system/ is marked `slow`: the fast tier (`-m "not slow"`) leaves
out real schedulers, `dag.test()` runs and many-Snakemake runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.project import PROJECT, load_dag

if TYPE_CHECKING:
    from tests.support.airflow_server import Server
    from tests.support.http import HttpRecorder
    from tests.support.s3_server import S3Server
    from tests.support.smtp import SmtpRecorder

__all__ = ["PROJECT", "load_dag"]  # still importable from here; new code imports tests.support.project

_HOME = Path(tempfile.mkdtemp(prefix="smaker-airflow-test-home-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(_HOME / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME}/airflow.db",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # Plans built by tests go to a throwaway cache, never the project's.
        "SMAKER_AIRFLOW_CACHE_DIR": str(_HOME / "plan-cache"),
        # Job servers (run/job_server.py) started by tests, and by the tests' Airflow, live here:
        # the session stops them at its end.
        "SMAKER_AIRFLOW_JOB_SERVER_DIR": str(_HOME / "job-servers"),
    }
)


@pytest.fixture(scope="session", autouse=True)
def _stop_job_servers() -> Iterator[None]:
    yield
    from smaker_airflow.run.job_server import stop_servers

    stop_servers(_HOME / "job-servers")


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """A migrated metadata DB (once per session)."""
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0, result.stderr[-3000:]
    yield _HOME


@pytest.fixture
def project() -> Iterator[Path]:
    """A scratch project (configs/, workflows/, runs/) inside the DAGs folder, with the example workflows."""
    (_HOME / "dags").mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="scratch-", dir=_HOME / "dags"))
    shutil.copytree(PROJECT / "workflows", root / "workflows", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "configs").mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_server() -> Iterator[Server]:
    """One real local Airflow for the system tests (started on first use, stopped at session end)."""
    from tests.support.airflow_server import start_server, stop_server

    server = start_server()
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """A real S3-compatible server (SeaweedFS) on loopback, with a key pair of its own; stopped after the module."""
    from tests.support.s3_server import S3Server

    folder = Path(tempfile.mkdtemp(prefix="smaker-s3-"))
    server = S3Server.start(folder)
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def http_recorder() -> Iterator[HttpRecorder]:
    """A loopback HTTP server recording every POST (webhook and Slack alerts)."""
    from tests.support.http import http_recorder

    with http_recorder() as recorder:
        yield recorder


@pytest.fixture
def smtp_server() -> Iterator[SmtpRecorder]:
    """A real SMTP server on loopback recording messages and logins."""
    from tests.support.smtp import smtp_recorder

    with smtp_recorder() as recorder:
        yield recorder


SYSTEM = Path(__file__).resolve().parent / "system"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/system/ slow (real schedulers, dag.test() runs, faults, load)."""
    for item in items:
        if item.path.is_relative_to(SYSTEM):
            item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)
