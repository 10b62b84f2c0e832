"""The A/B comparison in the DAG run's note, for every run, whoever triggered it.

The note is what an Airflow user sees first on a run (its header in the UI,
rendered as markdown). The `compare` task cannot set it: Airflow 3.3's Task SDK
(execution API) has no call that changes the running DAG run's note, and the
public REST API needs credentials a worker does not have. So this module is an
Airflow listener (registered by `SmakerPlugin`, entry point ``airflow.plugins``):
when a run finishes, success or failed, the scheduler calls it in its own
process, with the metadata DB at hand, and it copies the compare task's XCom
``note`` (run/comparison.py `run_note`) into the run's note.

A compare task that is cleared and runs again finishes the run again: the note
is rewritten (or the old table removed, when the new try left no comparison).
Text a user wrote in the note is kept above the table.
"""

from __future__ import annotations

import sys
from typing import Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

from smaker_airflow.dag import run_view
from smaker_airflow.run.comparison import NOTE_LIMIT, NOTE_TITLE

COMPARE_TASK = "compare"  # dag/production.py's task id (not imported: every Airflow process loads this module)


def merged_note(existing: str | None, table: str | None) -> str | None:
    """The run's note with `table` in place of the comparison it held (None: no note).

    What stands before NOTE_TITLE in `existing` is the user's and is kept; the result
    is at most NOTE_LIMIT characters (Airflow's note column).
    """
    own = (existing or "").split(NOTE_TITLE, 1)[0].rstrip()
    parts = [part for part in (own, table) if part]
    return "\n\n".join(parts)[:NOTE_LIMIT] if parts else None


def comparison_note(dag_run: Any, session: Any) -> str | None:
    """The `note` of the run's compare task XCom (`return_value`), or None when it has none."""
    from airflow.models.xcom import XComModel

    row = session.scalars(
        XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=COMPARE_TASK, key="return_value")
    ).first()
    value = XComModel.deserialize_value(row) if row is not None else None
    note = value.get("note") if isinstance(value, dict) else None
    return note if isinstance(note, str) and note.startswith(NOTE_TITLE) else None


def write_note(dag_run: Any, session: Any) -> None:
    """Put the compare task's table into `dag_run`'s note (an ORM DagRun of `session`), or take it out."""
    table = comparison_note(dag_run, session)
    existing = dag_run.note
    if table is None and NOTE_TITLE not in (existing or ""):
        return  # not an A/B run, or nothing of ours to remove
    note = merged_note(existing, table)
    if dag_run.dag_run_note is None:
        if note is not None:
            dag_run.note = note
    else:
        dag_run.dag_run_note.content = note
    # No flush: the change is written with the run's new state, by the caller's commit.


def _on_finished(dag_run: Any) -> None:
    from sqlalchemy.orm import object_session

    session = object_session(dag_run)
    if session is not None:  # the scheduler's session: written with the run's new state
        write_note(dag_run, session)
        return
    from airflow.utils.session import create_session

    with create_session() as own:
        write_note(own.merge(dag_run), own)


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    """Listener: a run finished successfully (called by the scheduler, or the API when marked)."""
    _on_finished(dag_run)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    """Listener: a run failed (an arm without metrics fails the compare task, and so the run)."""
    _on_finished(dag_run)


class SmakerPlugin(AirflowPlugin):
    """Registers this module's listeners with every Airflow component (entry point ``airflow.plugins``),
    and the A/B comparison tab of DAG run pages (dag/run_view.py) with the API server."""

    name = "smaker_airflow"
    listeners = [sys.modules[__name__]]  # noqa: RUF012  (AirflowPlugin declares it a list)
    external_views = [run_view.VIEW]  # noqa: RUF012

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        # Lazy: only the API server reads it; building the app imports its auth (seconds) that the
        # scheduler, dag-processor and workers, which load this plugin too, do not need.
        return run_view.fastapi_apps()
