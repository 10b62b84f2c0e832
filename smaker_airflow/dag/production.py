"""Production tasks of a DAG: quality gate and publish after the control arm's finals; assets.

- Every final job's outputs are outlets (Assets ``x-smaker://<dag_id>/<path>``),
  so downstream DAGs can be scheduled on them and the UI shows lineage.
- ``quality_gate:`` adds a task after the control arm's final jobs that reads
  their metrics files (the workflow's ``stage.metrics(...)`` outputs, or the
  final outputs matching ``quality_gate.metrics``).
- ``publish:`` adds a task after the gate (or the finals) that promotes the
  model and metrics to ``publish.to`` (see run/publish.py); its outlets
  are the published files, ``file://<publish.to>/current/<name>``.
- a config with more than one arm gets a ``compare`` task after every final job
  (the A/B comparison, run/comparison.py).

What these tasks do at run time is in run/ (gate.py, publish.py, comparison.py);
this module only says which tasks there are, their arguments and their edges.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from airflow.sdk import DAG, Asset, BaseOperator, TriggerRule

from smaker_airflow.config import DagConfig
from smaker_airflow.operators.base import config_arguments
from smaker_airflow.operators.compare import CompareArmsOperator
from smaker_airflow.operators.gate import QualityGateOperator
from smaker_airflow.operators.publish import PublishOperator
from smaker_airflow.plan.checks import (
    COMPARE_TASK,
    GATE_TASK,
    PUBLISH_TASK,
    check_task_ids,
    control_finals,
    production_files,
)
from smaker_airflow.plan.model import Plan
from smaker_airflow.run.publish import Artifact

ASSET_SCHEME = "x-smaker"  # "x-" schemes are left alone by Airflow's URI normalizers


def attach(dag: DAG, cfg: DagConfig, plan: Plan, tasks: dict[str, BaseOperator]) -> None:
    """Add assets, the quality gate and publish to a DAG built from `plan` (checked by plan.checks.check_plan)."""
    for job in plan.jobs:
        if job.final:
            tasks[job.task_id].add_outlets([output_asset(cfg, path) for path in job.outputs])
    gate, publish = cfg.quality_gate, cfg.publish
    if gate is None and publish is None:
        return
    artifacts = select_artifacts(cfg, plan)
    common: dict[str, Any] = {**config_arguments(cfg), "dag": dag}
    upstream: list[BaseOperator] = [tasks[job.task_id] for job in control_finals(cfg, plan)]
    if gate is not None:
        gate_task = QualityGateOperator(
            task_id=GATE_TASK,
            artifacts=[a for a in artifacts if a.metrics],
            gate=gate.as_dict(),
            publish_dir=str(publish.to) if publish is not None else None,
            retries=0,  # a verdict on metrics does not change by trying again
            doc_md="Checks the control arm's metrics against `quality_gate` and the production model.",
            **common,
        )
        upstream >> gate_task
        upstream = [gate_task]
    if publish is not None:
        publish_task = PublishOperator(
            task_id=PUBLISH_TASK,
            publish_dir=str(publish.to),
            artifacts=artifacts,
            sources=dict(plan.sources),
            gate_task_id=upstream[0].task_id if gate is not None else None,  # group-prefixed in a TaskGroup
            keep_versions=publish.keep_versions,
            outlets=[published_asset(cfg, a.name) for a in artifacts],
            doc_md=f"Promotes {', '.join(a.name for a in artifacts)} to `{publish.to}` (atomically).",
            **common,
        )
        upstream >> publish_task


def add_compare_task(cfg: DagConfig, plan: Plan, tasks: dict[str, BaseOperator]) -> BaseOperator | None:
    """Add `compare` downstream of every final job, for configs with more than one arm."""
    if len(cfg.arms) < 2:
        return None
    check_task_ids(cfg, plan)  # a job named `compare`: plan/checks.py
    compare = CompareArmsOperator(
        task_id=COMPARE_TASK,
        trigger_rule=TriggerRule.ALL_DONE,
        retries=0,  # reading a few JSON files: a retry would change nothing
        doc_md=f"Compares the arms' metrics with the control arm `{cfg.control}`: table in the log, "
        "JSON summary in XCom, files in `comparison/` of the run folder.",
        **config_arguments(cfg),
    )
    for job in plan.jobs:
        if job.final:
            tasks[job.task_id] >> compare
    return compare


def output_asset(cfg: DagConfig, path: str) -> Asset:
    return Asset(uri=f"{ASSET_SCHEME}://{cfg.dag_id}/{path}", group="smaker-output")


def published_asset(cfg: DagConfig, name: str) -> Asset:
    assert cfg.publish is not None  # only configs with `publish:` publish
    return Asset(uri=(cfg.publish.to / "current" / name).as_uri(), group="model")


def select_artifacts(cfg: DagConfig, plan: Plan) -> list[Artifact]:
    """The metrics files the gate reads and the files publish promotes, with their published names.

    Raises ConfigError as plan.checks.production_files does.
    """
    chosen = production_files(cfg, plan)
    names = _names([path for _, path, _ in chosen])
    return [Artifact(job.task_id, job.outputs.index(path), path, names[path], metrics) for job, path, metrics in chosen]


def _names(paths: list[str]) -> dict[str, str]:
    """File names inside a version: the bare names when they are unique, else the run-relative paths."""
    bare = [PurePosixPath(p).name for p in paths]
    unique = len(set(bare)) == len(bare)
    return {p: (PurePosixPath(p).name if unique else p) for p in paths}
