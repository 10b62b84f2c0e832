"""Plan + config -> Airflow DAG: one task per Snakemake job, edges as in Snakemake.

Jobs of one arm only sit in that arm's TaskGroup; jobs shared by arms (ingest,
preprocess...) sit outside. Every run starts with `prepare`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, BaseOperator, Param, TaskGroup
from airflow.sdk.definitions.param import ParamsDict

from smaker_airflow.config import DagConfig
from smaker_airflow.dag import alerts, docs, fused, handlers, production, resources
from smaker_airflow.dag.form import form_fields
from smaker_airflow.dag.mapped import build_mapped_tasks
from smaker_airflow.operators.base import config_arguments
from smaker_airflow.operators.prepare import PrepareRunOperator
from smaker_airflow.plan.checks import check_plan
from smaker_airflow.plan.groups import group_tasks
from smaker_airflow.plan.layout import MAPPED, check_mapped, choose_layout
from smaker_airflow.plan.model import Job, Plan

PREPARE_TASK = "prepare"


def build_dag(cfg: DagConfig, plan: Plan) -> DAG:
    """The Airflow DAG of a config and its plan. Raises ConfigError for a mistake only the plan shows."""
    check_plan(cfg, plan)  # reserved task ids, the gate's metrics, publish's files
    arguments = dag_arguments(cfg, plan)
    # Airflow copies the DAG's params into every task made inside it, then serializes and
    # validates each copy at every parse: 1,000 jobs x 3 form fields cost 3.9 s a parse. Tasks
    # get the DAG's params merged into their context at run time anyway: attach them after.
    params = ParamsDict(arguments.pop("params"))
    with DAG(**arguments) as dag:
        build_tasks(cfg, plan, dag)
    dag.params = params
    return dag


def build_tasks(cfg: DagConfig, plan: Plan, dag: DAG) -> tuple[BaseOperator, dict[str, Any]]:
    """Build a workflow's tasks into `dag`, inside the TaskGroup open at the call (if any).

    The one builder of the whole-DAG form (`build_dag`) and the TaskGroup form
    (dag/task_group.py): `prepare`, one task per job (arm TaskGroups nest in the open
    group), edges, assets, gate, publish and compare; or, in the mapped layout, one mapped
    task per rule (dag/mapped.py). Returns (`prepare`, plan task id -> job task).
    """
    if choose_layout(cfg, plan).name == MAPPED:  # one mapped task per rule (plan/layout.py)
        check_mapped(cfg, plan, max_map_length())
        return build_mapped_tasks(cfg, plan, dag, task_arguments, PREPARE_TASK)
    prepare = PrepareRunOperator(task_id=PREPARE_TASK, retries=0, **config_arguments(cfg))
    groups = {
        arm: TaskGroup(arm, tooltip=cfg.arms[arm].description or f"arm {arm}")
        for arm in dict.fromkeys(job.group for job in plan.jobs if job.group)
    }
    start = handlers.add_onstart(cfg, plan, prepare)
    tasks: dict[str, BaseOperator] = {}
    units = group_tasks(plan.jobs)  # one task per job; a group job's jobs share one
    group_class, job_class = fused.operator_classes(cfg)  # `snakemake.execution`: per_job or fused
    for unit in units:
        job = unit.job
        common = {"task_group": groups.get(job.group), **config_arguments(cfg), **task_arguments(cfg, job)}
        if len(unit.jobs) > 1:
            operator: BaseOperator = group_class(
                task_id=job.local_id, group=unit, doc_md=docs.group_doc(job, unit.jobs), **common
            )
        else:
            operator = job_class(task_id=job.local_id, job=job, doc_md=docs.job_doc(job), **common)
        tasks.update(dict.fromkeys([unit.task_id, *(member.task_id for member in unit.jobs)], operator))
    for unit in units:
        for task in [tasks[t] for t in unit.job.upstream] or [start]:
            task >> tasks[unit.task_id]
    handlers.add_end_handlers(cfg, plan, start, [tasks[unit.task_id] for unit in units])
    production.attach(dag, cfg, plan, tasks)
    production.add_compare_task(cfg, plan, tasks)
    fused.attach(cfg, units, tasks, start)  # fused: the `fused_run` task, each job task's trigger
    return prepare, tasks


def max_map_length() -> int:
    """Airflow's `[core] max_map_length`: the most map indexes one mapped task may have."""
    from airflow.configuration import conf

    return conf.getint("core", "max_map_length", fallback=1024)


def dag_arguments(cfg: DagConfig, plan: Plan) -> dict[str, Any]:
    import pendulum

    schedule = cfg.schedule
    tz = pendulum.timezone(schedule.timezone)
    start = schedule.start_date
    timeout = schedule.dagrun_timeout_minutes
    return {
        "dag_id": cfg.dag_id,
        "description": cfg.description or None,
        "schedule": schedule.cron,
        "start_date": pendulum.datetime(start.year, start.month, start.day, tz=tz) if start else None,
        "catchup": schedule.catchup,
        "max_active_runs": schedule.max_active_runs,
        "max_active_tasks": schedule.max_active_tasks,
        "dagrun_timeout": timedelta(minutes=timeout) if timeout else None,
        "tags": ["smaker", *cfg.tags],
        "params": {name: Param(**spec) for name, spec in form_fields(cfg).items()},
        "default_args": default_args(cfg),
        "doc_md": docs.dag_doc(cfg, plan),
        **alerts.dag_arguments(cfg),
    }


def default_args(cfg: DagConfig) -> dict[str, Any]:
    defaults = cfg.defaults
    args: dict[str, Any] = {
        "owner": defaults.owner,
        "retries": defaults.retries,
        "retry_delay": timedelta(seconds=defaults.retry_delay_seconds),
        "retry_exponential_backoff": defaults.retry_exponential_backoff,
    }
    if defaults.max_retry_delay_seconds is not None:
        args["max_retry_delay"] = timedelta(seconds=defaults.max_retry_delay_seconds)
    if defaults.pool is not None:
        args["pool"] = defaults.pool
    if defaults.queue is not None:
        args["queue"] = defaults.queue
    args.update(alerts.task_arguments(cfg))
    # The shared runs volume on every task's pod (KubernetesExecutor); a job's own pod override wins.
    args.update(resources.default_task_resources(cfg))
    return args


def task_arguments(cfg: DagConfig, job: Job) -> dict[str, Any]:
    """What a job's Snakemake directives mean for its Airflow task."""
    args: dict[str, Any] = {
        # `retries:` of the rule, unless the config asks for more.
        "retries": max(job.retries, cfg.defaults.retries),
        "priority_weight": 1 + max(job.priority, 0),
    }
    runtime = job.resources.get("runtime")
    if isinstance(runtime, int) and runtime > 0:
        args["execution_timeout"] = timedelta(minutes=runtime)  # Snakemake's runtime is in minutes
    args.update(resources.task_resources(cfg, job))  # pool slots, GPU queue, Kubernetes pod
    return args
