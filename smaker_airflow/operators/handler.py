"""Handler tasks: a workflow's onstart, onsuccess and onerror, once per DAG run.

``onstart`` runs after ``prepare`` and before every job; ``onsuccess`` after the last jobs
when none failed; ``onerror`` as soon as one job failed (Airflow trigger rules). Each
runs, for every selected arm whose main Snakefile defines it, in a Snakemake process of
its own (run/handlers.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smaker_airflow.operators.base import SmakerOperator
from smaker_airflow.run import state as runs
from smaker_airflow.run.handlers import HandlerProcess


class SnakemakeHandlerOperator(SmakerOperator):
    """Runs one handler of the workflow of each selected arm that defines it."""

    ui_color = "#fff3e0"

    def __init__(self, *, handler: str, arms: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handler = handler
        self.arms = arms
        self._process: HandlerProcess | None = None

    def execute(self, context: Any) -> None:
        run_id = context["dag_run"].run_id
        folder = self.run_folder(context)
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
