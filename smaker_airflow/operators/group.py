"""SnakemakeGroupOperator: one Airflow task runs a Snakemake group job.

Jobs of one `group:`, or a pipe()/service() writer with its reader, run as Snakemake
runs a group job: one Snakemake process that targets all of them, with cores for all
at once (a pipe's two ends must run together). plan/groups.py decides which jobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowSkipException

from smaker_airflow.operators.job import SnakemakeJobOperator
from smaker_airflow.plan.groups import GroupTask
from smaker_airflow.run import temp
from smaker_airflow.run.job_process import JobInvocation, JobProcess
from smaker_airflow.run.workdir import job_settings


class SnakemakeGroupOperator(SnakemakeJobOperator):
    """Runs the jobs of one group job together; ``job`` is the group seen as one task."""

    ui_color = "#dcedc8"

    def __init__(self, *, group: GroupTask, **kwargs: Any) -> None:
        super().__init__(job=group.job, **kwargs)
        self.members = group.jobs

    def execute(self, context: Any) -> dict[str, Any]:
        folder, state, plan = self.run_state(context)
        selected = [arm for arm in self.job.arms if arm in state.arms]
        if not selected:
            raise AirflowSkipException(f"arm(s) {', '.join(self.job.arms)} not selected for this run")
        arm = self.job.arm if self.job.arm in selected else selected[0]
        members = [plan.job(job.task_id) for job in self.members]  # where this run's overrides put them
        first, *others = (job.target for job in members)
        invocation = JobInvocation(
            snakefile=Path(state.configs[arm]["snakefile"]),
            configfile=Path(state.configs[arm]["configfile"]),
            workdir=folder,
            target=first,
            rule=self.members[0].rule,
            threads=max(self.job.threads, 1),
            attempt=context["ti"].try_number,
            log_files=tuple(self.job.log),
            # run/temp.py deletes temp files by the run's readers; this process sees only the group's.
            extra_args=("--notemp",),
            group_targets=tuple(others),
            cores=job_settings(folder).cores,  # the config's `snakemake.cores`, as planned
        )
        self.log.info(
            "Running group job %s: %s (arm %s, try %s) in %s",
            self.members[0].job_group,
            ", ".join([first, *others]),
            arm,
            invocation.attempt,
            folder,
        )
        self._process = JobProcess(invocation, on_line=lambda line: self.log.info("%s", line))
        try:
            self._process.run()
        finally:
            self._process.kill()
        temp.release(folder, members, state, self.log.info)
        return {"run_folder": str(folder), "outputs": self.job.outputs}
