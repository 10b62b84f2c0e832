"""Handler tasks in the DAG: a workflow's onstart, onsuccess and onerror, once per DAG run.

``onstart`` runs after ``prepare`` and before every job; ``onsuccess`` after the last jobs
when none failed; ``onerror`` as soon as one job failed (Airflow trigger rules).
"""

from __future__ import annotations

from airflow.sdk import BaseOperator

from smaker_airflow.config import DagConfig
from smaker_airflow.operators.base import config_arguments
from smaker_airflow.operators.handler import SnakemakeHandlerOperator
from smaker_airflow.plan.model import Plan

# Airflow trigger rule of each handler's task, downstream of the last jobs (onstart: of prepare).
TRIGGER_RULES = {"onstart": "all_success", "onsuccess": "none_failed", "onerror": "one_failed"}


def add_onstart(cfg: DagConfig, plan: Plan, prepare: BaseOperator) -> BaseOperator:
    """The task the first jobs wait for: an onstart task after ``prepare``, or ``prepare``."""
    onstart = _handler_task(cfg, plan, "onstart")
    if onstart is None:
        return prepare
    prepare >> onstart
    return onstart


def add_end_handlers(cfg: DagConfig, plan: Plan, start: BaseOperator, job_tasks: list[BaseOperator]) -> None:
    """onsuccess and onerror after the job tasks with no downstream job (the last ones)."""
    last = [task for task in dict.fromkeys(job_tasks) if not task.downstream_list] or [start]
    for handler in ("onsuccess", "onerror"):
        task = _handler_task(cfg, plan, handler)
        if task is not None:
            last >> task


def _handler_task(cfg: DagConfig, plan: Plan, handler: str) -> BaseOperator | None:
    arms = [arm for arm, names in plan.handlers.items() if handler in names]
    if not arms:
        return None
    return SnakemakeHandlerOperator(
        task_id=handler,
        handler=handler,
        arms=arms,
        **config_arguments(cfg),
        trigger_rule=TRIGGER_RULES[handler],
        retries=0,  # once per DAG run, as in Snakemake
        doc_md=f"Runs the workflow's `{handler}:` handler (arms {', '.join(arms)}) in the run folder.",
    )
