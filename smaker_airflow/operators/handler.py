"""Handler tasks: a workflow's onstart, onsuccess and onerror, once per DAG run.

``onstart`` runs after ``prepare`` and before every job; ``onsuccess`` after the last jobs
when none failed; ``onerror`` as soon as one job failed (Airflow trigger rules). Each
runs, for every selected arm whose main Snakefile defines it, in a Snakemake process of
its own (run/handlers.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from smaker_airflow.config import DagConfig
from smaker_airflow.plan.model import Plan
from smaker_airflow.run import state as runs
from smaker_airflow.run.handlers import HandlerProcess

# Airflow trigger rule of each handler's task, downstream of the last jobs (onstart: of prepare).
TRIGGER_RULES = {"onstart": "all_success", "onsuccess": "none_failed", "onerror": "one_failed"}


class SnakemakeHandlerOperator(BaseOperator):
    """Runs one handler of the workflow of each selected arm that defines it."""

    ui_color = "#fff3e0"

    def __init__(self, *, handler: str, arms: list[str], runs_root: str, dag_folder_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handler = handler
        self.arms = arms
        self.runs_root = runs_root
        self.dag_folder_id = dag_folder_id
        self._process: HandlerProcess | None = None

    def execute(self, context: Any) -> None:
        run_id = context["dag_run"].run_id
        folder = Path(self.runs_root) / self.dag_folder_id / runs.safe_run_id(run_id)
        state = runs.RunState.read(folder)
        for arm in (arm for arm in self.arms if arm in state.arms):
            self.log.info("Running the %s handler of arm %s in %s", self.handler, arm, folder)
            self._process = HandlerProcess(
                handler=self.handler,
                snakefile=Path(state.configs[arm]["snakefile"]),
                configfile=Path(state.configs[arm]["configfile"]),
                folder=folder,
                arm=arm,
            )
            try:
                self._process.run(lambda line: self.log.info("%s", line), summary=f"DAG run {run_id}: {self.handler}")
            finally:
                self._process.kill()

    def on_kill(self) -> None:
        if self._process is not None:
            self._process.kill()


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
        runs_root=str(cfg.runs_root),
        dag_folder_id=cfg.dag_id,
        trigger_rule=TRIGGER_RULES[handler],
        retries=0,  # once per DAG run, as in Snakemake
        doc_md=f"Runs the workflow's `{handler}:` handler (arms {', '.join(arms)}) in the run folder.",
    )
