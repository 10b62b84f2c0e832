"""SnakemakeMappedJobOperator: one map index of a rule's mapped task runs one job of this run.

The mapped layout (plan/layout.py, dag/mapped.py): `prepare` plans the run; each rule's
`RuleJobsOperator` returns that rule's jobs; Airflow expands the rule's task over them, one map index per
job, each with its own log, retries and state, labelled with the job's wildcards
(``map_index_template``). Running the job is `SnakemakeJobOperator`'s, unchanged.
"""

from __future__ import annotations

from typing import Any

from smaker_airflow.operators.base import SmakerOperator
from smaker_airflow.operators.job import SnakemakeJobOperator
from smaker_airflow.plan.layout import jobs_of
from smaker_airflow.plan.model import Job


class RuleJobsOperator(SmakerOperator):
    """The jobs of one rule task in this run: what its mapped task expands over.

    Airflow maps a task only over an upstream task's return value (not over a key of it),
    and each rule needs its own count: so each rule has this small task, which reads the
    run's plan `prepare` wrote. XCom return value: ``[{"job_id", "wildcards_label"}]``
    (the jobs of the selected arms; [] skips the rule without skipping the rules after it).
    """

    ui_color = "#fafafa"

    def __init__(self, *, rule_task: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rule_task = rule_task

    def execute(self, context: Any) -> list[dict[str, str]]:
        _folder, state, plan = self.run_state(context)
        jobs = jobs_of(plan, self.rule_task, state.arms)
        self.log.info("Rule task %s: %d job(s) in this run", self.rule_task, len(jobs))
        return jobs


class SnakemakeMappedJobOperator(SnakemakeJobOperator):
    """Runs the job ``job_id`` of the run's plan (written by `prepare`); ``wildcards_label`` is its wildcards.

    ``rule_task`` names the mapped task (its rule, arm-prefixed) for the log. XCom return
    value as `SnakemakeJobOperator`'s.
    """

    def __init__(self, *, job_id: str, wildcards_label: str, rule_task: str, **kwargs: Any) -> None:
        # The job is only known at run time: `execute` reads it from the run's plan.
        super().__init__(job=_PENDING, **kwargs)
        self.job_id = job_id
        self.wildcards_label = wildcards_label
        self.rule_task = rule_task

    def execute(self, context: Any) -> dict[str, Any]:
        _folder, _state, plan = self.run_state(context)
        self.job = plan.job(self.job_id)
        self.log.info("Rule task %s, job %s (%s)", self.rule_task, self.job.target, self.wildcards_label)
        return super().execute(context)


# A placeholder until execute(): a mapped task's job is chosen per map index at run time.
_PENDING = Job(
    task_id="", group="", rule="", wildcards={}, target="", inputs=[], outputs=[], log=[], threads=1,
    resources={}, retries=0, priority=0, arms=[], arm="", upstream=[], snakefile="",
)  # fmt: skip
