"""The fused form of a DAG (`snakemake.execution: fused`): a `fused_run` task and job tasks that follow it.

build.py builds the same tasks and edges in both modes; this module picks the job tasks'
classes and adds what fused execution needs: the `fused_run` task after the start (it runs
every job in one Snakemake process, run/fused.py, and emits the asset events of the final
jobs that succeeded in it, through an AssetAlias) and each job task's trigger.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from airflow.sdk import Asset, AssetAlias, BaseOperator

from smaker_airflow.config import DagConfig
from smaker_airflow.errors import ConfigError
from smaker_airflow.operators.base import config_arguments
from smaker_airflow.operators.fused import FusedGroupOperator, FusedJobOperator, FusedRunOperator
from smaker_airflow.operators.group import SnakemakeGroupOperator
from smaker_airflow.operators.job import SnakemakeJobOperator
from smaker_airflow.plan.groups import GroupTask
from smaker_airflow.run.assets import asset_path

RUN_TASK = "fused_run"
FUSED = "fused"


def is_fused(cfg: DagConfig) -> bool:
    """Whether the config asks for fused execution (`snakemake.execution: fused`)."""
    return cfg.snakemake.execution == FUSED


def operator_classes(cfg: DagConfig) -> tuple[type[SnakemakeGroupOperator], type[SnakemakeJobOperator]]:
    """(group task class, job task class) of the config's execution mode."""
    if is_fused(cfg):
        return FusedGroupOperator, FusedJobOperator
    return SnakemakeGroupOperator, SnakemakeJobOperator


def attach(cfg: DagConfig, units: Sequence[GroupTask], tasks: Mapping[str, BaseOperator], start: BaseOperator) -> None:
    """In fused mode: add the `fused_run` task after ``start`` and set each job task's trigger.

    ``units`` are the plan's tasks (plan/groups.py), ``tasks`` plan task id -> its operator.
    Raises ConfigError when a job's task id is `fused_run`. Does nothing in per-job mode.
    """
    if not is_fused(cfg):
        return
    if RUN_TASK in tasks:
        raise ConfigError(
            str(cfg.path),
            "snakemake.execution",
            f"a job's task id is '{RUN_TASK}', the task that runs a fused run. Rename that rule, or set "
            "`snakemake.execution: per_job`.",
        )
    checks_first = {unit.task_id for unit in units if _checks_first(unit, units)}
    # The outlets of final jobs' tasks that end on the triggerer: their events come from `fused_run`
    # (see FusedRunOperator). A task that checks first ends on a worker, which emits its own.
    final_assets = {}
    for job in (job for unit in units if unit.task_id not in checks_first for job in unit.jobs if job.final):
        uris = {asset_path(o.uri): o.uri for o in tasks[job.task_id].outlets if isinstance(o, Asset)}
        if uris and all(path in uris for path in job.outputs):
            final_assets[job.task_id] = [[uris[path], path] for path in job.outputs]
    run = FusedRunOperator(task_id=RUN_TASK, retries=0, final_assets=final_assets, **config_arguments(cfg))
    if final_assets:
        run.add_outlets([AssetAlias(f"{cfg.dag_id}.{RUN_TASK}")])
    start >> run
    for unit in units:
        operator = tasks[unit.task_id]
        assert isinstance(operator, FusedJobOperator)
        # Airflow would also time out the wait on the triggerer (a job queued in the fused process
        # is not late) and retry the job beside the fused process, which may still run it.
        operator.execution_timeout = None
        members = {job.task_id for job in unit.jobs}
        upstream = sorted({up for job in unit.jobs for up in job.upstream} - members)
        operator.watch(
            runs_root=str(cfg.runs_root),
            workflow_id=cfg.dag_id,
            task_ids=[job.task_id for job in unit.jobs],
            upstream=upstream,
            check_first=unit.task_id in checks_first,
        )


def _checks_first(unit: GroupTask, units: Sequence[GroupTask]) -> bool:
    """Whether a job task starts on a worker and reads its job's state first (operators/fused.py).

    The one job of its rule, needing other job tasks: an aggregate, a step of a chain. Its job
    has usually ended by the time its upstream tasks have, and a worker task then ends in about
    1 s where a trigger costs about 3 s. A rule of many such jobs keeps its triggers: on a
    worker they would queue for the few slots (``bench/scheduler.py``: 100 worker tasks take
    0.5 s of a slot each, the triggerer starts about 18 triggers a second).
    """
    if len(unit.jobs) != 1 or not any(unit.jobs[0].upstream):
        return False
    rule = unit.jobs[0].rule
    return sum(1 for other in units for job in other.jobs if job.rule == rule) == 1
