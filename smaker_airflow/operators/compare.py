"""The last task of an A/B DAG: compare the selected arms' metrics with the control arm.

It runs once every final job is done (trigger rule ALL_DONE): deselected arms
are skipped, and a failed arm should not hide the comparison of the others.
Because it is the DAG's leaf, Airflow derives the run's state from it, so it
fails (after writing what it could) when an arm it expected left no metrics,
or when `prepare` never ran: the run never looks green when an arm failed.

Where a user sees the result without opening files: the task log (the table),
the XCom `return_value` (JSON summary with a "table" key; `smaker-airflow
trigger --wait` prints it). The DAG run's note is not set: the Task SDK's
execution API has no call to change the running DAG run's note (only the note
of a run that a task triggers), and the public REST API needs credentials a
worker does not have.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from airflow.sdk import BaseOperator, TriggerRule

from smaker_airflow.config import DagConfig, load_config
from smaker_airflow.errors import SmakerError
from smaker_airflow.plan.checks import COMPARE_TASK, check_task_ids
from smaker_airflow.plan.model import Plan
from smaker_airflow.run import state as runs
from smaker_airflow.run.comparison import MetricSource, build_comparison, metric_sources, write_comparison


def add_compare_task(cfg: DagConfig, plan: Plan, tasks: dict[str, BaseOperator]) -> BaseOperator | None:
    """Add `compare` downstream of every final job, for configs with more than one arm."""
    if len(cfg.arms) < 2:
        return None
    check_task_ids(cfg, plan)  # a job named `compare`: plan/checks.py
    compare = CompareArmsOperator(
        task_id=COMPARE_TASK,
        config_path=str(cfg.path),
        sources=metric_sources(plan),
        trigger_rule=TriggerRule.ALL_DONE,
        retries=0,  # reading a few JSON files: a retry would change nothing
        doc_md=f"Compares the arms' metrics with the control arm `{cfg.control}`: table in the log, "
        "JSON summary in XCom, files in `comparison/` of the run folder.",
    )
    for job in plan.jobs:
        if job.final:
            tasks[job.task_id] >> compare
    return compare


class CompareArmsOperator(BaseOperator):
    """Writes comparison/{comparison.json,.md,.png} in the run folder and returns the summary."""

    ui_color = "#fff3e0"

    def __init__(self, *, config_path: str, sources: list[MetricSource], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_path = config_path
        self.sources = sources

    def execute(self, context: Any) -> dict[str, Any]:
        cfg = load_config(self.config_path)
        run_id = context["dag_run"].run_id
        folder = runs.run_folder(cfg, run_id)
        if not (folder / runs.STATE_DIR / runs.STATE_FILE).is_file():
            raise SmakerError(
                f"Nothing to compare: this run's `prepare` task did not finish ({folder} has no run state), "
                "so no arm ran. Its log says why; fix that and trigger a new run."
            )
        state = runs.RunState.read(folder)
        sources = self._sources(cfg, state)
        comparison = build_comparison(
            folder, sources, arms=state.arms, control=cfg.control, dag_id=cfg.dag_id, run_id=run_id
        )
        summary = write_comparison(comparison, folder)
        for line in summary["table"].splitlines():
            self.log.info("%s", line)
        self.log.info("Comparison written to %s", folder / "comparison")
        if comparison.missing or not comparison.rows:
            # A failed task pushes no return value: push it here, so the summary is still in XCom.
            context["ti"].xcom_push("return_value", summary)
            expected = ", ".join(f for row in comparison.missing for f in row.files) or "none in the plan"
            raise SmakerError(
                f"{cfg.dag_id}: no metrics for {', '.join(r.label for r in comparison.missing) or 'any arm'} "
                f"(expected {expected}): those jobs failed or did not run, see their logs. The comparison "
                "of the other arms is written all the same."
            )
        return summary

    def _sources(self, cfg: DagConfig, state: runs.RunState) -> list[MetricSource]:
        if not state.overrides:
            return self.sources
        # The overrides moved the outputs (C~1.0 -> C~0.5): ask Snakemake where they are now, as
        # `prepare` did when it checked the shape; only the selected arms, to keep it short.
        from smaker_airflow.plan.planner import build_plan

        selected = replace(cfg, arms={arm: cfg.arms[arm] for arm in state.arms})
        return metric_sources(build_plan(selected, state.overrides), state.arms)
