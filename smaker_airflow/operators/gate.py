"""QualityGateOperator: the `quality_gate` task (the checks themselves are run/gate.py's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smaker_airflow.operators.base import SmakerOperator
from smaker_airflow.run.gate import judge
from smaker_airflow.run.publish import Artifact, artifact_paths, require_files
from smaker_airflow.run.storage import object_path


class QualityGateOperator(SmakerOperator):
    """Fails, with the metrics side by side, when the control arm's new model is not good enough.

    Raises QualityGateFailed (its message, which alerts carry, holds the tables).
    XCom return value when it passes: ``{"passed": True, "results": [{"file": run-relative path,
    "production": "version <name>" or why there is none, "checks": [{"metric", "new", "production",
    "threshold", "failures"}]}]}``; `publish` records it in the version's provenance.
    """

    ui_color = "#fce4ec"

    def __init__(
        self,
        *,
        artifacts: list[Artifact],
        gate: dict[str, Any],
        publish_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.artifacts = artifacts  # the metrics files of the control arm's final jobs
        self.gate = gate
        self.publish_dir = publish_dir

    def execute(self, context: Any) -> dict[str, Any]:
        folder, state, plan = self.run_state(context)
        paths = artifact_paths(folder, plan, self.artifacts)
        require_files(paths, f"quality gate of {self.dag_id} run {state.run_id}")
        storage = self.config.storage
        production: Path | None = None
        if self.publish_dir and storage is not None:  # versions in object storage (run/storage_publish.py)
            production = object_path(self.publish_dir, storage.conn_id)  # type: ignore[assignment]
        elif self.publish_dir:
            production = Path(self.publish_dir)
        verdict = judge(paths, self.gate, production)
        verdict.raise_if_failed(self.dag_id, state.run_id, Path(self.config_path).name)
        self.log.info("Quality gate passed:\n%s", verdict.text)
        return {"passed": True, "results": verdict.results}
