"""SnakemakeGroupOperator: one Airflow task runs a Snakemake group job.

Jobs of one `group:`, or a pipe()/service() writer with its reader, run as Snakemake
runs a group job: one Snakemake process that targets all of them, with cores for all
at once (a pipe's two ends must run together). plan/groups.py decides which jobs; the
job operator's `execute` runs them (its `members`).
"""

from __future__ import annotations

from typing import Any

from smaker_airflow.operators.job import SnakemakeJobOperator
from smaker_airflow.plan.groups import GroupTask
from smaker_airflow.plan.model import Job


class SnakemakeGroupOperator(SnakemakeJobOperator):
    """Runs the jobs of one group job together; ``job`` is the group seen as one task.

    XCom return value: ``{"run_folder": str, "outputs": [every member's run-relative outputs]}``.
    """

    ui_color = "#dcedc8"

    def __init__(self, *, group: GroupTask, **kwargs: Any) -> None:
        super().__init__(job=group.job, **kwargs)
        self.group_jobs = group.jobs

    @property
    def members(self) -> list[Job]:
        """The group's jobs, in the order the plan lists them."""
        return list(self.group_jobs)
