"""SnakemakeJobOperator: one Airflow task runs exactly one Snakemake job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from smaker_airflow.plan.model import Job
from smaker_airflow.run import state as runs
from smaker_airflow.run.job_process import JobInvocation, JobProcess
from smaker_airflow.run.workdir import job_settings


class SnakemakeJobOperator(BaseOperator):
    """Runs one job of the plan in its own Snakemake process, in the run's folder.

    The job (rule, target, threads...) comes from the plan; what the run changes
    (arms, overrides, run date) comes from the run folder that `prepare` wrote.
    """

    ui_color = "#f1f8e9"
    template_fields = ()

    def __init__(self, *, job: Job, runs_root: str, dag_folder_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job
        self.runs_root = runs_root
        self.dag_folder_id = dag_folder_id
        self._process: JobProcess | None = None

    def execute(self, context: Any) -> dict[str, Any]:
        folder = Path(self.runs_root) / self.dag_folder_id / runs.safe_run_id(context["dag_run"].run_id)
        state = runs.RunState.read(folder)
        selected = [arm for arm in self.job.arms if arm in state.arms]
        if not selected:
            raise AirflowSkipException(f"arm(s) {', '.join(self.job.arms)} not selected for this run")
        arm = self.job.arm if self.job.arm in selected else selected[0]
        invocation = JobInvocation(
            snakefile=Path(state.configs[arm]["snakefile"]),
            configfile=Path(state.configs[arm]["configfile"]),
            workdir=folder,
            target=state.targets.get(self.job.task_id, self.job.target),
            rule=self.job.rule,
            threads=self.job.threads,
            attempt=context["ti"].try_number,
            log_files=tuple(self.job.log),
            **job_settings(folder).invocation_fields(),  # cores and args of the config's `snakemake:`
        )
        self.log.info("Running %s (arm %s, try %s) in %s", invocation.target, arm, invocation.attempt, folder)
        self._process = JobProcess(invocation, on_line=lambda line: self.log.info("%s", line))
        try:
            self._process.run()
        finally:
            # Also on a timeout or any exception raised into execute(): no orphan Snakemake.
            self._process.kill()
        return {"run_folder": str(folder), "outputs": self.job.outputs}

    def on_kill(self) -> None:
        if self._process is not None:
            self._process.kill()
