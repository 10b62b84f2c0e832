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
- with ``promote:`` and ``publish:``, the gate and publish act on the A/B winner
  instead of the control arm: a ``promote`` task after ``compare`` (operators/promote.py)
  replaces the ``quality_gate`` and ``publish`` tasks.

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
from smaker_airflow.operators.promote import PromoteOperator
from smaker_airflow.operators.publish import PublishOperator
from smaker_airflow.plan.checks import (
    COMPARE_TASK,
    GATE_TASK,
    PROMOTE_TASK,
    PUBLISH_TASK,
    check_task_ids,
    control_finals,
    production_files,
)
from smaker_airflow.plan.model import Plan
from smaker_airflow.run.publish import Artifact

ASSET_SCHEME = "x-smaker"  # "x-" schemes are left alone by Airflow's URI normalizers


def attach(dag: DAG, cfg: DagConfig, plan: Plan, tasks: dict[str, Any], *, outlets: bool = True) -> None:
    """Add assets, the quality gate and publish to a DAG built from `plan` (checked by plan.checks.check_plan).

    ``outlets=False``: the job tasks got their outlets when made (mapped tasks, dag/mapped.py).
    """
    for job in plan.jobs:
        if job.final and outlets:
            tasks[job.task_id].add_outlets([output_asset(cfg, path) for path in job.outputs])
    gate, publish = cfg.quality_gate, cfg.publish
    if (gate is None and publish is None) or promotes_winner(cfg):
        return  # nothing to gate, or the `promote` task gates and publishes the winner (add_compare_task)
    artifacts = select_artifacts(cfg, plan)
    common: dict[str, Any] = {**config_arguments(cfg), "dag": dag}
    upstream: list[BaseOperator] = [tasks[job.task_id] for job in control_finals(cfg, plan)]
    if gate is not None:
        gate_task = QualityGateOperator(
            task_id=GATE_TASK,
            artifacts=[a for a in artifacts if a.metrics],
            gate=gate.as_dict(),
            publish_dir=(cfg.publish_url or str(publish.to)) if publish is not None else None,
            retries=0,  # a verdict on metrics does not change by trying again
            doc_md="Checks the control arm's metrics against `quality_gate` and the production model.",
            **common,
        )
        upstream >> gate_task
        upstream = [gate_task]
    if publish is not None:
        # In object storage there is no flock: one publish of this DAG at a time (run/storage_publish.py).
        serial = {"max_active_tis_per_dag": 1} if cfg.publish_url else {}
        publish_task = PublishOperator(
            task_id=PUBLISH_TASK,
            publish_dir=cfg.publish_url or str(publish.to),
            artifacts=artifacts,
            sources=dict(plan.sources),
            gate_task_id=upstream[0].task_id if gate is not None else None,  # group-prefixed in a TaskGroup
            keep_versions=publish.keep_versions,
            outlets=[published_asset(cfg, a.name) for a in artifacts],
            doc_md=f"Promotes {', '.join(a.name for a in artifacts)} to `{cfg.publish_url or publish.to}` (atomically).",
            **serial,
            **common,
        )
        upstream >> publish_task


def promotes_winner(cfg: DagConfig) -> bool:
    """Whether the A/B winner (not the control arm) is gated and published: `promote:` with `publish:`."""
    return cfg.promote is not None and cfg.publish is not None


def add_compare_task(cfg: DagConfig, plan: Plan, tasks: dict[str, Any]) -> BaseOperator | None:
    """Add `compare` downstream of every final job, for configs with more than one arm (and `promote` after it)."""
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
    if promotes_winner(cfg):
        compare >> promote_task(cfg, plan, compare.task_id)
    return compare


def promote_task(cfg: DagConfig, plan: Plan, compare_task_id: str) -> BaseOperator:
    """The `promote` task: gate and publish the arm the comparison found better (operators/promote.py)."""
    assert cfg.publish is not None and cfg.promote is not None  # promotes_winner(cfg)
    artifacts = {arm: select_artifacts(cfg, plan, arm) for arm in cfg.arms}
    names = sorted({a.name for arts in artifacts.values() for a in arts})
    return PromoteOperator(
        task_id=PROMOTE_TASK,
        artifacts=artifacts,
        publish_dir=str(cfg.publish.to),
        sources=dict(plan.sources),
        compare_task_id=compare_task_id,  # group-prefixed in a TaskGroup
        gate=cfg.quality_gate.as_dict() if cfg.quality_gate is not None else None,
        keep_versions=cfg.publish.keep_versions,
        outlets=[published_asset(cfg, name) for name in names],
        retries=0,  # a verdict and a gate do not change by trying again
        doc_md=f"Publishes the arm that is better than `{cfg.control}` on `{cfg.promote.metric}` "
        f"(the comparison's verdicts) to `{cfg.publish.to}`, through the quality gate; skipped when no arm is.",
        **config_arguments(cfg),
    )


def output_asset(cfg: DagConfig, path: str) -> Asset:
    return Asset(uri=f"{ASSET_SCHEME}://{cfg.dag_id}/{path}", group="smaker-output")


def published_asset(cfg: DagConfig, name: str) -> Asset:
    assert cfg.publish is not None  # only configs with `publish:` publish
    if cfg.publish_url:  # object storage: the version `current.json` names
        return Asset(uri=f"{cfg.publish_url}/current/{name}", group="model")
    return Asset(uri=(cfg.publish.to / "current" / name).as_uri(), group="model")


def select_artifacts(cfg: DagConfig, plan: Plan, arm: str | None = None) -> list[Artifact]:
    """The metrics files the gate reads and the files publish promotes, with their published names.

    `arm`: the control arm when None. Raises ConfigError as plan.checks.production_files does.
    """
    chosen = production_files(cfg, plan, arm)
    names = _names([path for _, path, _ in chosen])
    return [Artifact(job.task_id, job.outputs.index(path), path, names[path], metrics) for job, path, metrics in chosen]


def _names(paths: list[str]) -> dict[str, str]:
    """File names inside a version: the bare names when they are unique, else the run-relative paths."""
    bare = [PurePosixPath(p).name for p in paths]
    unique = len(set(bare)) == len(bare)
    return {p: (PurePosixPath(p).name if unique else p) for p in paths}
