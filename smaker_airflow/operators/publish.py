"""PublishOperator: the `publish` task (promotion, provenance and pruning are run/publish.py's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowSkipException

from smaker_airflow.operators.base import SmakerOperator
from smaker_airflow.run import storage_publish
from smaker_airflow.run.publish import CURRENT, Artifact, artifact_paths, publish
from smaker_airflow.run.storage import object_path, url_of


class PublishOperator(SmakerOperator):
    """Promotes the control arm's final outputs (model, metrics) to `publish.to`, with provenance.

    Each outlet (an Asset per published file) gets ``{"version", "run_id"}`` as its event's extra.
    XCom return value: ``{"published": True, "version": folder name, "path": str, "files": [published
    names], "replaced": [lineage]}``. A run older than the version in production (a backfill)
    publishes nothing: the task is skipped (no asset event), its log says why and its XCom is
    ``{"published": False, "reason": str, "current": the version that stays in production}``.
    """

    ui_color = "#fff3e0"

    def __init__(
        self,
        *,
        publish_dir: str,
        artifacts: list[Artifact],
        sources: dict[str, str],
        gate_task_id: str | None = None,
        keep_versions: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.publish_dir = publish_dir
        self.artifacts = artifacts
        self.sources = sources  # file -> sha256 of the plan: the code that ran
        self.gate_task_id = gate_task_id
        self.keep_versions = keep_versions

    def execute(self, context: Any) -> dict[str, Any]:
        folder, state, plan = self.run_state(context)
        paths = artifact_paths(folder, plan, self.artifacts)
        gate = context["ti"].xcom_pull(task_ids=self.gate_task_id) if self.gate_task_id else None
        cfg = self.config
        if cfg.storage is not None:  # object storage: versions + current.json (run/storage_publish.py)
            root = object_path(self.publish_dir, cfg.storage.conn_id)
            done = storage_publish.publish(
                cfg,
                state,
                paths,
                root=root,
                run_url=url_of(folder),
                logical_date=context["dag_run"].logical_date,
                sources=self.sources,
                gate=gate,
                keep_versions=self.keep_versions,
            )
            pointer = f"{self.publish_dir}/{storage_publish.POINTER}"
        else:
            publish_dir = Path(self.publish_dir)
            done = publish(
                cfg,
                state,
                paths,
                publish_dir=publish_dir,
                logical_date=context["dag_run"].logical_date,
                sources=self.sources,
                gate=gate,
                keep_versions=self.keep_versions,
            )
            pointer = str(publish_dir / CURRENT)
        if done.version is None:
            self.log.warning("Not published: %s. %s still points to %s", done.skipped, pointer, done.current)
            # A skipped task returns nothing: push the verdict here, so XCom says why.
            context["ti"].xcom_push(
                "return_value", {"published": False, "reason": done.skipped, "current": done.current}
            )
            raise AirflowSkipException(f"not published: {done.skipped}")
        for old in done.removed:
            self.log.info("Removed old version %s (keep_versions=%s)", url_of(old), self.keep_versions)
        names = [a.name for a in paths]
        replaced = done.replaced[0]["version"] if done.replaced else "nothing"
        self.log.info(
            "Published %s as %s (replacing %s); %s now points to it",
            ", ".join(names),
            url_of(done.version),
            replaced,
            pointer,
        )
        for asset in self.outlets:  # downstream DAGs see which version an event is
            context["outlet_events"][asset].extra = {"version": done.version.name, "run_id": state.run_id}
        return {
            "published": True,
            "version": done.version.name,
            "path": url_of(done.version),
            "files": sorted(names),
            "replaced": done.replaced,
        }
