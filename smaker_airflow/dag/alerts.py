"""The `alerts:` section -> callbacks and a deadline on the DAG and its tasks.

Task-level callbacks (on_failure, on_retry) go into every task's default_args;
run-level ones (on_success, on_failure) and the Deadline Alert into DAG(...).
Each callback gets the config, so alerts find the run folder through
`run.state.run_folder` and never through operator attributes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from smaker_airflow.config import DagConfig
from smaker_airflow.notifications.callbacks import AlertCallback, deadline_missed

TASK_EVENTS = ("failure", "retry")  # per task: the alert carries the job's rule, wildcards and log tail
DAG_EVENTS = ("success", "failure")  # per run: success once, failure only when no task failed (a timeout)


def task_arguments(cfg: DagConfig) -> dict[str, Any]:
    """default_args: {"on_failure_callback": AlertCallback, "on_retry_callback": ...} for the events configured."""
    return _callbacks(cfg, TASK_EVENTS, dag_level=False)


def dag_arguments(cfg: DagConfig) -> dict[str, Any]:
    """DAG(...) arguments: run-level on_success / on_failure callbacks and the `deadline`, those configured.

    Raises ConfigError for a notifier spec or deadline the config gets wrong.
    """
    args = _callbacks(cfg, DAG_EVENTS, dag_level=True)
    deadline = deadline_alert(cfg)
    if deadline is not None:
        args["deadline"] = deadline
    return args


def deadline_alert(cfg: DagConfig) -> DeadlineAlert | None:
    """An Airflow DeadlineAlert: the run must finish `deadline_minutes` after it was queued.

    None without a deadline or when every `on_deadline` notifier is disabled (load_config
    already refused one of `deadline_minutes`/`on_deadline` without the other).
    """
    minutes = cfg.alerts.deadline_minutes
    specs = cfg.alerts.notifiers("deadline")
    if minutes is None or not specs:
        return None
    # The triggerer gets the callback as an import path + JSON kwargs: plain notifier items, enabled only.
    enabled = [{"type": spec.kind, **spec.options} for spec in specs]
    return DeadlineAlert(
        # Queued-at, not the logical date: a manual run may have none.
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=minutes),
        callback=AsyncCallback(
            deadline_missed,
            kwargs={"dag_id": cfg.dag_id, "deadline_minutes": minutes, "notifiers": enabled},
        ),
    )


def _callbacks(cfg: DagConfig, events: tuple[str, ...], *, dag_level: bool) -> dict[str, Any]:
    """{"on_<event>_callback": AlertCallback} for each event with enabled notifiers."""
    args: dict[str, Any] = {}
    for event in events:
        specs = cfg.alerts.notifiers(event)
        if specs:
            args[f"on_{event}_callback"] = AlertCallback(event, specs, dag_level=dag_level, cfg=cfg)
    return args
