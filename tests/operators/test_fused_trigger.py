"""FusedJobTrigger's grace after a deferral from a worker, on a run folder whose job already succeeded.

Airflow 3.3's scheduler fails a task resumed before it processed the worker's exit after
defer() (operators/fused_trigger.py, DEFER_GRACE_SECONDS); seen through a real scheduler in
tests/system/test_fused_clear.py. Here: the trigger's own events, run as the triggerer runs it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from smaker_airflow.operators.fused_trigger import FusedJobTrigger
from smaker_airflow.run import fused
from smaker_airflow.run.state import safe_run_id

RUN_ID = "manual__2026-11-30T20:00:00+00:00"


def first_event(trigger: FusedJobTrigger, try_number: int) -> tuple[dict[str, Any], float]:
    """The trigger's first event payload and the seconds it took, for a task instance at `try_number`."""
    # The triggerer sets the task instance before run(); the trigger reads its try number and run id.
    ti = SimpleNamespace(task_id="slow", try_number=try_number, run_id=RUN_ID)
    trigger.task_instance = ti  # type: ignore[assignment]

    async def first() -> Any:
        async for event in trigger.run():
            return event

    start = time.monotonic()
    event = asyncio.run(first())
    return event.payload, time.monotonic() - start


def succeeded_run(tmp_path: Path) -> Path:
    """A runs root whose run's fused process ran job `slow` and ended."""
    folder = tmp_path / "dag" / safe_run_id(RUN_ID)
    directory = fused.jobs_dir(folder)
    directory.mkdir(parents=True)
    fused.write_json(directory / "slow.json", {"task_id": "slow", "state": fused.SUCCEEDED})
    fused.write_json(directory / fused.RUN_FILE, {"state": "finished", "exit_code": 0, "ended": time.time()})
    return tmp_path


def trigger(runs_root: Path, not_before: float | None) -> FusedJobTrigger:
    return FusedJobTrigger(
        runs_root=str(runs_root),
        workflow_id="dag",
        task_ids=["slow"],
        upstream=[],
        finish_on_worker=True,
        not_before=not_before,
    )


def test_a_task_that_deferred_from_a_worker_is_resumed_no_sooner_than_its_grace(tmp_path: Path) -> None:
    runs_root = succeeded_run(tmp_path)
    payload, seconds = first_event(trigger(runs_root, time.time() + 1.5), try_number=1)
    assert payload == {"action": fused.SUCCESS, "task_ids": ["slow"]}
    assert seconds >= 1.4, seconds
    payload, seconds = first_event(trigger(runs_root, time.time() + 1.5), try_number=2)  # a cleared task's try
    assert payload["action"] == fused.RUN_ALONE and seconds >= 1.4, (payload, seconds)


def test_without_a_grace_the_trigger_fires_at_once(tmp_path: Path) -> None:
    runs_root = succeeded_run(tmp_path)
    payload, seconds = first_event(trigger(runs_root, None), try_number=1)
    assert payload == {"action": fused.SUCCESS, "task_ids": ["slow"]}
    assert seconds < 1.0, seconds
    # A grace already over (the task waited on the triggerer longer than it) costs nothing.
    payload, seconds = first_event(trigger(runs_root, time.time() - 1), try_number=1)
    assert payload["action"] == fused.SUCCESS and seconds < 1.0, seconds


def test_the_grace_survives_serialization(tmp_path: Path) -> None:
    """The triggerer rebuilds the trigger from `serialize()`: the grace must be in it."""
    original = trigger(tmp_path, 123.0)
    classpath, kwargs = original.serialize()
    assert classpath == "smaker_airflow.operators.fused_trigger.FusedJobTrigger"
    assert FusedJobTrigger(**kwargs).not_before == 123.0
