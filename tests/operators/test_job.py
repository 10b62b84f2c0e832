"""SnakemakeJobOperator on its own: what a job task says when its run folder is not there.

The context holds only the two fields the operator reads (the run id and the try number);
the operators' real runs are the `dag.test()` and scheduler tests under tests/dag/ and
tests/system/.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from smaker_airflow.errors import SmakerError
from smaker_airflow.operators.job import SnakemakeJobOperator
from smaker_airflow.run.state import safe_run_id
from tests.support.project import load_dag


def test_worker_without_the_run_folder_says_it_needs_a_shared_filesystem(project: Path) -> None:
    """What a Celery worker on another machine sees when runs_root is not mounted there."""
    dag = load_dag(project, "ab_test")
    task = dag.get_task("control.train")
    assert isinstance(task, SnakemakeJobOperator)
    run_id = "manual__2026-11-25T10:00:00+00:00"
    folder = Path(task.runs_root) / "ab_test" / safe_run_id(run_id)
    assert not folder.exists()  # `prepare` ran on another machine
    context: dict[str, Any] = {"dag_run": SimpleNamespace(run_id=run_id), "ti": SimpleNamespace(try_number=1)}
    with pytest.raises(SmakerError) as caught:
        task.execute(context)
    message = str(caught.value)
    assert str(folder / ".smaker" / "run.json") in message
    assert "not on a filesystem this worker shares with the others" in message
    assert "mount the runs root at the same path on every worker" in message
