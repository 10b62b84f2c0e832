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

import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

from airflow.sdk import DAG, Asset, BaseOperator, TriggerRule

from smaker_airflow.config import DagConfig
from smaker_airflow.errors import ConfigError
from smaker_airflow.operators.base import config_arguments
from smaker_airflow.operators.compare import CompareArmsOperator
from smaker_airflow.operators.gate import QualityGateOperator
from smaker_airflow.operators.publish import PublishOperator
from smaker_airflow.plan.model import Job, Plan
from smaker_airflow.run.publish import Artifact

GATE_TASK = "quality_gate"
PUBLISH_TASK = "publish"
COMPARE_TASK = "compare"
ASSET_SCHEME = "x-smaker"  # "x-" schemes are left alone by Airflow's URI normalizers
DEFAULT_METRICS = ("metrics*.json",)  # metrics of a workflow that marks none (plain Snakefiles)
DEFAULT_UPSTREAM_FILES = ("model*",)  # besides the finals' outputs, what publish takes from upstream jobs


def attach(dag: DAG, cfg: DagConfig, plan: Plan, tasks: dict[str, BaseOperator]) -> None:
    """Add assets, the quality gate and publish to a DAG built from `plan`."""
    for job in plan.jobs:
        if job.final:
            tasks[job.task_id].add_outlets([output_asset(cfg, path) for path in job.outputs])
    gate, publish = cfg.option("quality_gate"), cfg.option("publish")
    if gate is None and publish is None:
        return
    for task_id in (GATE_TASK, PUBLISH_TASK):
        if task_id in tasks:
            raise ConfigError(
                str(cfg.path),
                "quality_gate" if task_id == GATE_TASK else "publish",
                f"a job of rule '{plan.job(task_id).rule}' has the task id '{task_id}', which the production "
                "task needs; rename that rule.",
            )
    if gate is not None and gate.get("no_regression") and publish is None:
        raise ConfigError(
            str(cfg.path),
            "quality_gate.no_regression",
            "comparing with the production model needs `publish.to`: the production model's metrics are the "
            "ones published there. Add a `publish:` section, or keep only `min`/`max` thresholds.",
        )
    artifacts = select_artifacts(cfg, plan)
    common: dict[str, Any] = {**config_arguments(cfg), "dag": dag}
    upstream: list[BaseOperator] = [tasks[job.task_id] for job in control_finals(cfg, plan)]
    if gate is not None:
        gate_task = QualityGateOperator(
            task_id=GATE_TASK,
            artifacts=[a for a in artifacts if a.metrics],
            gate=dict(gate),
            publish_dir=str(publish_dir(cfg)) if publish is not None else None,
            retries=0,  # a verdict on metrics does not change by trying again
            doc_md="Checks the control arm's metrics against `quality_gate` and the production model.",
            **common,
        )
        upstream >> gate_task
        upstream = [gate_task]
    if publish is not None:
        publish_task = PublishOperator(
            task_id=PUBLISH_TASK,
            publish_dir=str(publish_dir(cfg)),
            artifacts=artifacts,
            sources=dict(plan.sources),
            gate_task_id=GATE_TASK if gate is not None else None,
            keep_versions=publish.get("keep_versions"),
            outlets=[published_asset(cfg, a.name) for a in artifacts],
            doc_md=f"Promotes {', '.join(a.name for a in artifacts)} to `{publish_dir(cfg)}` (atomically).",
            **common,
        )
        upstream >> publish_task


def add_compare_task(cfg: DagConfig, plan: Plan, tasks: dict[str, BaseOperator]) -> BaseOperator | None:
    """Add `compare` downstream of every final job, for configs with more than one arm."""
    if len(cfg.arms) < 2:
        return None
    if COMPARE_TASK in tasks:
        raise ConfigError(
            str(cfg.path),
            "variants",
            f"a job of rule '{plan.job(COMPARE_TASK).rule}' has the task id '{COMPARE_TASK}', which the A/B "
            "comparison task needs; rename that rule.",
        )
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


def publish_dir(cfg: DagConfig) -> Path:
    target = Path(cfg.option("publish")["to"])
    return target if target.is_absolute() else cfg.project_root / target


def output_asset(cfg: DagConfig, path: str) -> Asset:
    return Asset(uri=f"{ASSET_SCHEME}://{cfg.dag_id}/{path}", group="smaker-output")


def published_asset(cfg: DagConfig, name: str) -> Asset:
    return Asset(uri=(publish_dir(cfg) / "current" / name).as_uri(), group="model")


def control_finals(cfg: DagConfig, plan: Plan) -> list[Job]:
    return [job for job in plan.jobs if job.final and cfg.control in job.arms]


def select_artifacts(cfg: DagConfig, plan: Plan) -> list[Artifact]:
    """The metrics files the gate reads and the files publish promotes, with their published names."""
    finals = control_finals(cfg, plan)
    metrics = {(job.task_id, path) for job in finals for path in _metrics_of(cfg, job)}
    if cfg.option("quality_gate") is not None and not metrics:
        raise ConfigError(
            str(cfg.path),
            "quality_gate",
            f"the final jobs of arm '{cfg.control}' write no metrics file to gate on. Write one with "
            "`output: stage.metrics('metrics.json')`, or list its file name under `quality_gate.metrics`.",
        )
    chosen = [(job, path) for job in finals for path in job.outputs if (job.task_id, path) in metrics]
    if cfg.option("publish") is not None:
        patterns = cfg.option("publish").get("files")
        candidates = [(job, p) for job in [*finals, *_ancestors(plan, finals)] for p in job.outputs]
        chosen += [
            (job, p) for job, p in candidates if (job.task_id, p) not in metrics and _wanted(job, p, finals, patterns)
        ]
        if not chosen:
            raise ConfigError(str(cfg.path), "publish.files", f"{patterns} match(es) no output of arm '{cfg.control}'.")
    names = _names([path for _, path in chosen])
    return [
        Artifact(job.task_id, job.outputs.index(path), path, names[path], (job.task_id, path) in metrics)
        for job, path in chosen
    ]


def _metrics_of(cfg: DagConfig, job: Job) -> list[str]:
    patterns = (cfg.option("quality_gate") or {}).get("metrics")
    if patterns is None and job.metrics:
        return list(job.metrics)
    return [p for p in job.outputs if _matches(p, patterns or DEFAULT_METRICS)]


def _wanted(job: Job, path: str, finals: list[Job], patterns: list[str] | None) -> bool:
    if patterns is not None:
        return _matches(path, patterns)
    return job in finals or _matches(path, DEFAULT_UPSTREAM_FILES)


def _matches(path: str, patterns: Any) -> bool:
    return any(fnmatch.fnmatch(PurePosixPath(path).name, p) or fnmatch.fnmatch(path, p) for p in patterns)


def _ancestors(plan: Plan, jobs: list[Job]) -> list[Job]:
    seen: dict[str, Job] = {}
    todo = [t for job in jobs for t in job.upstream]
    while todo:
        task_id = todo.pop()
        if task_id not in seen:
            seen[task_id] = plan.job(task_id)
            todo.extend(seen[task_id].upstream)
    return [job for job in plan.jobs if job.task_id in seen]  # plan order: stable


def _names(paths: list[str]) -> dict[str, str]:
    """File names inside a version: the bare names when they are unique, else the run-relative paths."""
    bare = [PurePosixPath(p).name for p in paths]
    unique = len(set(bare)) == len(bare)
    return {p: (PurePosixPath(p).name if unique else p) for p in paths}
