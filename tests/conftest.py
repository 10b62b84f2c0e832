"""Test setup: a real Airflow with its own temporary AIRFLOW_HOME and a migrated SQLite DB.

The environment is set before anything imports Airflow (this file is loaded
first by pytest). Scratch projects are made inside the DAGs folder, so their
DAG files are found there, as `dag.test()` requires (it parses that folder).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parent.parent
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
    }
)


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


def load_dag(project: Path, config_name: str, text: str | None = None) -> Any:
    """Write configs/<name>.yaml (or copy the project's example) and its DAG file; return the DAG."""
    from smaker_airflow.dag.loader import dag_file_text, dag_from_config

    config = project / "configs" / f"{config_name}.yaml"
    if text is not None:
        config.write_text(text)
    elif not config.exists():
        shutil.copy(PROJECT / "configs" / f"{config_name}.yaml", config)
    dag_file = project / "dags" / f"{config_name}.py"
    dag_file.parent.mkdir(exist_ok=True)
    dag_file.write_text(dag_file_text(config, project / "dags"))
    return dag_from_config(config, fileloc=str(dag_file))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)
