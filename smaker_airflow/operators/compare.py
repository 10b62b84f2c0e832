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

from dataclasses import asdict
from pathlib import Path
from typing import Any

from smaker_airflow.errors import SmakerError
from smaker_airflow.operators.base import SmakerOperator
from smaker_airflow.run import state as runs
from smaker_airflow.run import storage
from smaker_airflow.run.comparison import (
    COMPARISON_DIR,
    build_comparison,
    metric_sources,
    note_links,
    write_comparison,
)


def ui_base_path() -> str:
    """The path Airflow's UI is served under: "" at the host's root, else the path of `[api] base_url`."""
    from urllib.parse import urlparse

    from airflow.configuration import conf

    return urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


class CompareArmsOperator(SmakerOperator):
    """Writes comparison/{comparison.json,.md,.png} in the run folder and returns the summary.

    The metrics files are those of the run's own plan (`run.state.read_run_plan`), so
    trigger-form overrides that moved them are followed. XCom return value (also
    pushed when the task fails for missing metrics): `run.comparison.write_comparison`'s
    summary, ``{"dag_id", "run_id", "control", "arms", "metrics", "rows", "missing",
    "reference", "overrides", "differences" (intervals and verdicts), "promote", "winner", "files": {"json", "markdown", "chart", "trend"}, "written_at", "table": markdown, "note": the
    run note's markdown (at most 1,000 characters)}``.
    """

    ui_color = "#fff3e0"

    def execute(self, context: Any) -> dict[str, Any]:
        cfg = self.config
        folder = self.results_of(context["dag_run"].run_id)
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
            promote=asdict(cfg.promote) if cfg.promote is not None else None,
        )
        links = note_links(cfg.dag_id, state.run_id, ui_base_path())
        if cfg.storage is None:
            publish_dir = cfg.publish.to if cfg.publish is not None else None
            summary = write_comparison(comparison, folder, publish_dir, links=links)
        else:  # written in a scratch folder, then uploaded beside the run's outputs
            # (no trend of published versions: they are in the store, not in a local folder)
            with storage.scratch(cfg.dag_id, state.run_id) as scratch:
                summary = write_comparison(comparison, scratch, None, links=links)
                storage.upload_tree(scratch / COMPARISON_DIR, folder / COMPARISON_DIR)
            summary["files"] = {
                k: storage.url_of(folder / COMPARISON_DIR / Path(v).name) for k, v in summary["files"].items()
            }
        for line in summary["table"].splitlines():
            self.log.info("%s", line)
        self.log.info("Comparison written to %s", storage.url_of(folder / COMPARISON_DIR))
        if comparison.missing or not comparison.rows:
            # A failed task pushes no return value: push it here, so the summary is still in XCom.
            context["ti"].xcom_push("return_value", summary)
            expected = ", ".join(f for row in comparison.missing for f in row.files) or "none in the plan"
            raise SmakerError(
                f"{cfg.dag_id}: no metrics for {', '.join(r.label for r in comparison.missing) or 'any arm'} "
                f"(expected {expected}): those jobs failed or did not run, see their logs. The comparison "
                "of the other arms is written all the same."
            )
        if cfg.promote is not None and comparison.rows and cfg.promote.metric not in comparison.metrics:
            raise SmakerError(
                f"{cfg.path.name}: promote.metric '{cfg.promote.metric}' is not a metric of this run (the metrics "
                f"files have: {', '.join(comparison.metrics) or 'none'}). Set `promote.metric` to one of them."
            )
        return summary
