"""Config mistakes that only the plan reveals: `check_plan(cfg, plan)`.

The config alone cannot tell whether the control arm's final jobs write a metrics
file for `quality_gate`, whether `publish.files` matches any output, or whether a
rule's task id takes the name of a task the DAG adds (quality_gate, publish,
compare). `smaker-airflow validate` and the DAG build (dag/build.py) both call
`check_plan`, so validate finds these without building a DAG.

The gate's and publish's files are chosen here too (`production_files`): the
check and the DAG use the same choice. No Airflow, no Snakemake.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import PurePosixPath

from smaker_airflow.config import DagConfig
from smaker_airflow.errors import ConfigError
from smaker_airflow.plan.layout import MAPPED, choose_layout
from smaker_airflow.plan.model import Job, Plan

# Tasks the DAG adds besides the jobs: a job must not take their ids.
GATE_TASK = "quality_gate"
PUBLISH_TASK = "publish"
COMPARE_TASK = "compare"  # only in DAGs with more than one arm
PROMOTE_TASK = "promote"  # only in DAGs with `promote:` and `publish:`
DEFAULT_METRICS = ("metrics*.json",)  # metrics of a workflow that marks none (plain Snakefiles)
DEFAULT_UPSTREAM_FILES = ("model*",)  # besides the finals' outputs, what publish takes from upstream jobs


def check_plan(cfg: DagConfig, plan: Plan) -> None:
    """Raise ConfigError (naming the config file and key) for a mistake only the plan shows."""
    check_task_ids(cfg, plan)
    for arm in promoted_arms(cfg):
        production_files(cfg, plan, arm)
    check_storage(cfg, plan)


def promoted_arms(cfg: DagConfig) -> list[str]:
    """The arms the gate and publish may take: every arm when `promote:` publishes the A/B winner, else the control."""
    if cfg.promote is not None and cfg.publish is not None:
        return list(cfg.arms)
    return [cfg.control]


def check_task_ids(cfg: DagConfig, plan: Plan) -> None:
    """A job whose task id is the id of a task the DAG adds (quality_gate, publish, compare)."""
    reserved = {}
    if cfg.quality_gate is not None or cfg.publish is not None:
        reserved[GATE_TASK] = ("quality_gate", "the production")
        reserved[PUBLISH_TASK] = ("publish", "the production")
    if len(cfg.arms) > 1:
        reserved[COMPARE_TASK] = ("variants", "the A/B comparison")
    if cfg.promote is not None and cfg.publish is not None:
        reserved[PROMOTE_TASK] = ("promote", "the A/B winner's publish")
    task_ids = {job.task_id for job in plan.jobs}
    for task_id, (key, needed_by) in reserved.items():
        if task_id in task_ids:
            raise ConfigError(
                str(cfg.path),
                key,
                f"a job of rule '{plan.job(task_id).rule}' has the task id '{task_id}', which {needed_by} "
                "task needs; rename that rule.",
            )


def check_storage(cfg: DagConfig, plan: Plan) -> None:
    """What runs on object storage (`storage:`) cannot do yet: each refusal names the rule and the way out.

    Jobs run with Snakemake's default storage provider, which maps every input, output and log
    path to ``<storage.url>/<dag_id>/<run>/<path>``: a path outside the run folder has no place
    there. Handlers run a whole Snakemake process in the run folder (not the storage); temp(),
    pipe()/service() and group jobs rely on files shared between processes on one disk.
    """
    if cfg.storage is None:
        return
    way_out = "or remove `storage:` to run on a shared disk."
    layout = choose_layout(cfg, plan)
    if layout.name == MAPPED:  # runs on object storage are built and tested with one task per job
        raise ConfigError(
            str(cfg.path),
            "storage",
            f"this config gets the mapped layout ({layout.reason}); runs on object storage support one task "
            f"per job only: set `workflow.layout: job_tasks` (each run then checks its jobs at its start), {way_out}",
        )
    for arm, handlers in plan.handlers.items():
        if handlers:
            raise ConfigError(
                str(cfg.path),
                "storage",
                f"arm '{arm}' defines {', '.join(handlers)}: workflow handlers are not supported with runs on "
                f"object storage yet. Move that code into a rule, {way_out}",
            )
    for job in plan.jobs:
        what = None
        if job.temp_outputs:
            what = f"temp() output(s) {', '.join(job.temp_outputs)}"
        elif job.pipe_outputs or job.job_group:
            what = "a group job (`group:`, pipe() or service())"
        else:
            outside = [p for p in [*job.inputs, *job.outputs, *job.log] if PurePosixPath(p).is_absolute() or ".." in p]
            if outside:
                what = f"path(s) outside the run folder ({', '.join(outside)})"
        if what:
            raise ConfigError(
                str(cfg.path),
                "storage",
                f"rule '{job.rule}' ({job.snakefile}) has {what}, which runs on object storage do not support "
                f"yet. Change the rule (relative paths, no temp()/group), {way_out}",
            )


def control_finals(cfg: DagConfig, plan: Plan, arm: str | None = None) -> list[Job]:
    """The final jobs of the control arm (or of `arm`): what the gate and publish wait for."""
    arm = arm or cfg.control
    return [job for job in plan.jobs if job.final and arm in job.arms]


def production_files(cfg: DagConfig, plan: Plan, arm: str | None = None) -> list[tuple[Job, str, bool]]:
    """(job, output path, is a metrics file) of what the gate reads and publish promotes, plan order.

    Metrics files: the control arm's final outputs marked by `stage.metrics(...)`, or
    matching `quality_gate.metrics` (default `metrics*.json` for unmarked workflows).
    Published files: the metrics files, then the outputs of the finals and their
    ancestors that match `publish.files` (default: every final output and `model*`).
    Raises ConfigError when the gate has no metrics file or publish matches nothing.
    `arm`: another arm than the control (the A/B winner that `promote:` publishes).
    """
    arm = arm or cfg.control
    finals = control_finals(cfg, plan, arm)
    metrics = {(job.task_id, path) for job in finals for path in _metrics_of(cfg, job)}
    if cfg.quality_gate is not None and not metrics:
        raise ConfigError(
            str(cfg.path),
            "quality_gate",
            f"the final jobs of arm '{arm}' write no metrics file to gate on. Write one with "
            "`output: stage.metrics('metrics.json')`, or list its file name under `quality_gate.metrics`.",
        )
    chosen = [(job, path, True) for job in finals for path in job.outputs if (job.task_id, path) in metrics]
    if cfg.publish is not None:
        patterns = cfg.publish.files
        candidates = [(job, p) for job in [*finals, *_ancestors(plan, finals)] for p in job.outputs]
        chosen += [
            (job, p, False)
            for job, p in candidates
            if (job.task_id, p) not in metrics and _wanted(job, p, finals, patterns)
        ]
        if not chosen:
            shown = list(patterns) if patterns is not None else None
            raise ConfigError(str(cfg.path), "publish.files", f"{shown} match(es) no output of arm '{arm}'.")
    return chosen


def _metrics_of(cfg: DagConfig, job: Job) -> list[str]:
    patterns = cfg.quality_gate.metrics if cfg.quality_gate is not None else None
    if patterns is None and job.metrics:
        return list(job.metrics)
    return [p for p in job.outputs if _matches(p, patterns or DEFAULT_METRICS)]


def _wanted(job: Job, path: str, finals: list[Job], patterns: Sequence[str] | None) -> bool:
    if patterns is not None:
        return _matches(path, patterns)
    return job in finals or _matches(path, DEFAULT_UPSTREAM_FILES)


def _matches(path: str, patterns: Sequence[str]) -> bool:
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
