"""PromoteOperator: the `promote` task of an A/B DAG with `promote:` and `publish:`.

After `compare`, it reads the verdicts (compare's XCom) and, when an arm is
"better" than the control, gates it (`quality_gate:`, run/gate.py) and publishes
it (run/publish.py, the same atomic publish as daily retraining) with the
comparison in its provenance. No winner: the task is skipped and production
stays as it was. The verdicts themselves are run/comparison.py's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowSkipException

from smaker_airflow.errors import SmakerError
from smaker_airflow.operators.base import SmakerOperator
from smaker_airflow.run.gate import judge
from smaker_airflow.run.publish import CURRENT, Artifact, artifact_paths, publish, require_files


class PromoteOperator(SmakerOperator):
    """Publishes the A/B winner (the arm the comparison found better than the control), gated.

    `artifacts` is arm -> the files publish takes from that arm (metrics files first, as
    the gate reads them). XCom return value: ``{"published": True, "arm", "version",
    "path", "files", "replaced"}``; skipped (``{"published": False, "reason"}``) when no arm
    won or the run is older than production. Raises QualityGateFailed when the winner
    fails the gate.
    """

    ui_color = "#e8f5e9"

    def __init__(
        self,
        *,
        artifacts: dict[str, list[Artifact]],
        publish_dir: str,
        sources: dict[str, str],
        compare_task_id: str,
        gate: dict[str, Any] | None = None,
        keep_versions: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.artifacts = artifacts
        self.publish_dir = publish_dir
        self.sources = sources  # file -> sha256 of the plan: the code that ran
        self.compare_task_id = compare_task_id
        self.gate = gate
        self.keep_versions = keep_versions

    def execute(self, context: Any) -> dict[str, Any]:
        summary = context["ti"].xcom_pull(task_ids=self.compare_task_id)
        if not isinstance(summary, dict) or "differences" not in summary:
            raise SmakerError(
                f"{self.dag_id}: the `{self.compare_task_id}` task left no comparison in XCom, so there is no "
                "verdict to act on. Its log says why; clear it to compare again."
            )
        for entry in summary["differences"]:
            self.log.info("Verdict for %s: %s (%s)", entry["label"], entry["verdict"], entry["why"])
        winner = summary.get("winner")
        if not winner:
            return self._skip(context, "no arm is better than the control arm: production stays as it is")
        folder, state, plan = self.run_state(context)
        paths = artifact_paths(folder, plan, self.artifacts[winner])
        require_files(paths, f"promote of {winner} in {self.dag_id} run {state.run_id}")
        publish_dir = Path(self.publish_dir)
        verdict = None
        if self.gate is not None:
            gated = judge({a: p for a, p in paths.items() if a.metrics}, self.gate, publish_dir)
            gated.raise_if_failed(self.dag_id, state.run_id, Path(self.config_path).name)
            self.log.info("Quality gate passed for %s:\n%s", winner, gated.text)
            verdict = {"passed": True, "results": gated.results}
        done = publish(
            self.config,
            state,
            paths,
            publish_dir=publish_dir,
            logical_date=context["dag_run"].logical_date,
            sources=self.sources,
            gate=verdict,
            keep_versions=self.keep_versions,
            arm=winner,
            comparison=_provenance_of(summary),
        )
        if done.version is None:
            return self._skip(context, str(done.skipped))
        self.log.info("Published arm %s as %s; %s now points to it", winner, done.version, publish_dir / CURRENT)
        for asset in self.outlets:
            context["outlet_events"][asset].extra = {
                "version": done.version.name,
                "run_id": state.run_id,
                "arm": winner,
            }
        return {
            "published": True,
            "arm": winner,
            "version": done.version.name,
            "path": str(done.version),
            "files": sorted(a.name for a in paths),
            "replaced": done.replaced,
        }

    def _skip(self, context: Any, reason: str) -> dict[str, Any]:
        self.log.info("Not published: %s", reason)
        context["ti"].xcom_push("return_value", {"published": False, "reason": reason})
        raise AirflowSkipException(f"not published: {reason}")


def _provenance_of(summary: dict[str, Any]) -> dict[str, Any]:
    """What of the comparison a published version keeps: the verdicts, intervals and each arm's metrics."""
    keep = ("run_id", "control", "arms", "promote", "winner", "differences", "reference", "overrides")
    rows = [{"label": r["label"], "arm": r["arm"], "values": r["values"]} for r in summary.get("rows", [])]
    return {**{key: summary.get(key) for key in keep}, "rows": rows, "table": summary.get("files", {}).get("markdown")}
