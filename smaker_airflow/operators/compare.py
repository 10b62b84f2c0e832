"""The last task of an A/B DAG: compare the selected arms' metrics with the control arm.

It runs once every final job is done (trigger rule ALL_DONE): deselected arms
are skipped, and a failed arm should not hide the comparison of the others.
Because it is the DAG's leaf, Airflow derives the run's state from it, so it
fails (after writing what it could) when an arm it expected left no metrics,
or when `prepare` never ran: the run never looks green when an arm failed.

Where a user sees the result without opening files: the DAG run's note (the
table with each arm's parameter values and the run's overrides, for every run
whoever triggered it; written when the run finishes by dag/run_note.py from
this task's XCom, because the Task SDK has no call that sets the running DAG
run's note), the task log (the full table) and the XCom `return_value` (JSON
summary with "table" and "note" keys). The task is added by dag/production.py.
"""

from __future__ import annotations

from typing import Any

from smaker_airflow.errors import SmakerError
from smaker_airflow.operators.base import SmakerOperator
from smaker_airflow.run import state as runs
from smaker_airflow.run.comparison import build_comparison, metric_sources, write_comparison


class CompareArmsOperator(SmakerOperator):
    """Writes comparison/{comparison.json,.md,.png} in the run folder and returns the summary.

    The metrics files are those of the run's own plan (`run.state.read_run_plan`), so
    trigger-form overrides that moved them are followed. XCom return value (also
    pushed when the task fails for missing metrics): `run.comparison.write_comparison`'s
    summary, ``{"dag_id", "run_id", "control", "arms", "metrics", "rows", "missing",
    "reference", "overrides", "files": {"json", "markdown", "chart"}, "table": markdown, "note": the
    run note's markdown (at most 1,000 characters)}``.
    """

    ui_color = "#fff3e0"

    def execute(self, context: Any) -> dict[str, Any]:
        cfg = self.config
        folder = self.run_folder(context)
        if not (folder / runs.STATE_DIR / runs.STATE_FILE).is_file():
            raise SmakerError(
                f"Nothing to compare: this run's `prepare` task did not finish ({folder} has no run state), "
                "so no arm ran. Its log says why; fix that and trigger a new run."
            )
        folder, state, plan = self.run_state(context)
        comparison = build_comparison(
            folder,
            metric_sources(plan, state.arms),
            arms=state.arms,
            control=cfg.control,
            dag_id=cfg.dag_id,
            run_id=state.run_id,
            overrides=state.overrides,
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
